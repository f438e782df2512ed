//! Products: what a processed granule leaves behind, and how it appears atomically.
//!
//! | module | writes |
//! | --- | --- |
//! | [`cog`] | Cloud-Optimized GeoTIFFs (`classification.tif`, `superres.tif`): tiled 256², ZSTD, internal overviews, IFDs before data |
//! | [`geojson`] | RFC 7946 WGS84 geometries from UTM map coordinates, split at the antimeridian (`labels.geojson`) |
//! | [`stac`] | the STAC 1.0.0 Item (`item.json`) with the projection, raster and eo extensions and provenance |
//! | [`quicklook`] | the RGBA `quicklook.png` |
//! | [`classmap`] | `classification.png`: top label per patch in CORINE Land Cover colours, and its legend |
//! | [`publish`] | the staging directory and the atomic swap into `<out>/<granule-id>/` |
//!
//! Invariants: every writer here writes to the path it is given and nothing else; only
//! [`publish::Staging::publish`] makes a product visible, so a reader of `<out>/` never
//! sees a half-written product. Everything is synchronous (the daemon runs it on a
//! blocking thread).

pub mod classmap;
pub mod cog;
pub mod error;
pub mod geojson;
pub mod publish;
pub mod quicklook;
pub mod stac;

pub use cog::{write_cog, CogBand, CogSample};
pub use error::ProductError;
pub use geojson::{bbox, map_polygon, utm_to_lonlat, write_feature_collection};
pub use publish::{sweep_stale, Staging};
pub use quicklook::write_quicklook;
pub use stac::{write_item, Asset, Item, ItemSpec, RasterBand};
