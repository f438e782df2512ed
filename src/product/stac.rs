//! The STAC 1.0.0 Item of a product (`item.json`).
//!
//! The Item carries:
//! - the footprint (`geometry`, antimeridian-split by [`super::geojson`]) and `bbox`;
//! - the projection extension v2.0.0 (`proj:code`, `proj:transform`, `proj:shape`) of
//!   the 10 m grid in `properties`, overridden per asset where an asset lies on another
//!   grid (the 1200 m `classification.tif`);
//! - the raster extension v1.1.0 (`raster:bands`) and eo extension v1.1.0 (`eo:bands`)
//!   on the assets that declare them; each extension's schema URL is listed in
//!   `stac_extensions` only when used;
//! - free provenance properties supplied by the pipeline (input id, level, baseline,
//!   models, execution provider, timings, offsets) and warnings under
//!   [`WARNINGS_KEY`].
//!
//! Invariant: `properties.datetime` is never null. It is the sensing time; when that is
//! unknown it is the processing time, and a warning saying so is added.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::geojson;
use super::ProductError;
use crate::granule::GeoRef;

/// The STAC version written.
pub const STAC_VERSION: &str = "1.0.0";
/// Schema URL of the projection extension.
pub const PROJECTION_EXT: &str = "https://stac-extensions.github.io/projection/v2.0.0/schema.json";
/// Schema URL of the raster extension.
pub const RASTER_EXT: &str = "https://stac-extensions.github.io/raster/v1.1.0/schema.json";
/// Schema URL of the electro-optical extension.
pub const EO_EXT: &str = "https://stac-extensions.github.io/eo/v1.1.0/schema.json";
/// Schema URL of the classification extension (the legend of `classification.png`).
pub const CLASSIFICATION_EXT: &str =
    "https://stac-extensions.github.io/classification/v1.0.0/schema.json";
/// Media type of a Cloud-Optimized GeoTIFF asset.
pub const MEDIA_COG: &str = "image/tiff; application=geotiff; profile=cloud-optimized";
/// Media type of a GeoJSON asset.
pub const MEDIA_GEOJSON: &str = "application/geo+json";
/// Media type of a PNG asset.
pub const MEDIA_PNG: &str = "image/png";
/// The property holding provenance warnings (a JSON array of strings).
pub const WARNINGS_KEY: &str = "s2edge:warnings";

/// One entry of an asset's `raster:bands` (raster extension v1.1.0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RasterBand {
    /// Band name (not part of the raster extension, but harmless and useful).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `uint8`, `uint16`, `float32`, ...
    pub data_type: String,
    /// Nodata value of the stored samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodata: Option<f64>,
    /// Physical value = stored × scale + offset (e.g. 0.0001 for harmonised DN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// See `scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
    /// Unit of the physical value, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// One entry of an asset's `eo:bands` (eo extension v1.1.0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EoBand {
    /// Band name, e.g. `B04`.
    pub name: String,
    /// The eo extension's common name, e.g. `red`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Centre wavelength in micrometres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center_wavelength: Option<f64>,
}

/// A STAC asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    /// Relative to the Item, e.g. `./superres.tif`, so a product directory can be moved.
    pub href: String,
    /// Media type, e.g. [`MEDIA_COG`].
    #[serde(rename = "type")]
    pub media_type: String,
    /// Human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Roles (`data`, `overview`, `metadata`, ...).
    #[serde(default)]
    pub roles: Vec<String>,
    /// `proj:shape` of this asset when its grid differs from the Item's.
    #[serde(
        rename = "proj:shape",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub proj_shape: Option<[usize; 2]>,
    /// `proj:transform` of this asset when its grid differs from the Item's.
    #[serde(
        rename = "proj:transform",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub proj_transform: Option<[f64; 6]>,
    /// Per-band storage description.
    #[serde(
        rename = "raster:bands",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub raster_bands: Option<Vec<RasterBand>>,
    /// Per-band spectral description.
    #[serde(rename = "eo:bands", default, skip_serializing_if = "Option::is_none")]
    pub eo_bands: Option<Vec<EoBand>>,
    /// Further fields of other extensions (e.g. `classification:classes`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Asset {
    /// An asset with no band descriptions.
    pub fn new(href: impl Into<String>, media_type: &str, title: &str, roles: &[&str]) -> Self {
        Asset {
            href: href.into(),
            media_type: media_type.to_string(),
            title: Some(title.to_string()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            proj_shape: None,
            proj_transform: None,
            raster_bands: None,
            eo_bands: None,
            extra: Map::new(),
        }
    }

    /// The quicklook asset: an overview a catalogue shows as the Item's picture.
    pub fn quicklook(href: impl Into<String>) -> Self {
        Asset::new(
            href,
            MEDIA_PNG,
            "Quicklook (true colour)",
            &["overview", "visual"],
        )
    }

    /// The classification map asset (`classification.png`) with its legend as
    /// `classification:classes`.
    pub fn classification_map(href: impl Into<String>, legend: Value) -> Self {
        let mut a = Asset::new(
            href,
            MEDIA_PNG,
            "Land-cover map: top label per patch, CORINE Land Cover colours",
            &["visual", "overview"],
        );
        a.extra.insert("classification:classes".into(), legend);
        a
    }

    /// Declares the asset's own grid (`proj:shape`, `proj:transform`).
    pub fn with_grid(mut self, georef: &GeoRef) -> Self {
        self.proj_shape = Some([georef.height, georef.width]);
        self.proj_transform = Some(georef.transform.to_stac());
        self
    }
}

/// A STAC link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Relation, e.g. `self`.
    pub rel: String,
    /// Target.
    pub href: String,
    /// Media type of the target.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// What the pipeline knows about a product; [`Item::build`] turns it into an Item.
#[derive(Debug, Clone)]
pub struct ItemSpec {
    /// Item id (the granule id).
    pub id: String,
    /// Sensing time, if the input said.
    pub sensing_time: Option<DateTime<Utc>>,
    /// When the product was made (`created`, and `datetime` when sensing time is unknown).
    pub processed: DateTime<Utc>,
    /// The 10 m grid and its EPSG code.
    pub georef: GeoRef,
    /// Assets by key (`superres`, `classification`, `labels`, `quicklook`).
    pub assets: BTreeMap<String, Asset>,
    /// Provenance properties; warnings go in a string array under [`WARNINGS_KEY`].
    pub properties: Map<String, Value>,
    /// An optional `self` link href.
    pub self_href: Option<String>,
}

/// A STAC 1.0.0 Item, as written to `item.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Always `Feature`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always [`STAC_VERSION`].
    pub stac_version: String,
    /// Schema URLs of the extensions used.
    pub stac_extensions: Vec<String>,
    /// The granule id.
    pub id: String,
    /// Footprint in WGS84 lon/lat (Polygon, or MultiPolygon across the antimeridian).
    pub geometry: Value,
    /// RFC 7946 bbox of `geometry` (west > east across the antimeridian).
    pub bbox: [f64; 4],
    /// `datetime`, `created`, `proj:*` and provenance.
    pub properties: Map<String, Value>,
    /// Links (`self` when known).
    pub links: Vec<Link>,
    /// Assets by key.
    pub assets: BTreeMap<String, Asset>,
}

impl Item {
    /// Builds the Item of `spec`.
    ///
    /// # Errors
    /// [`ProductError::Geo`] when the georef's EPSG code is not a WGS84 UTM zone (the
    /// footprint cannot be computed); [`ProductError::Invalid`] for an empty id.
    pub fn build(spec: ItemSpec) -> Result<Item, ProductError> {
        if spec.id.is_empty() {
            return Err(ProductError::invalid("STAC Item id is empty"));
        }
        let geometry = geojson::footprint(&spec.georef)?;
        let bbox = geojson::bbox(&geometry)?;
        let mut properties = spec.properties;
        let stamp =
            |t: DateTime<Utc>| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true));
        let datetime = match spec.sensing_time {
            Some(t) => t,
            None => {
                push_warning(
                    &mut properties,
                    "sensing time unknown: datetime is the processing time",
                );
                spec.processed
            }
        };
        properties.insert("datetime".into(), stamp(datetime));
        properties.insert("created".into(), stamp(spec.processed));
        properties.insert(
            "proj:code".into(),
            Value::String(format!("EPSG:{}", spec.georef.epsg)),
        );
        properties.insert(
            "proj:transform".into(),
            serde_json::json!(spec.georef.transform.to_stac()),
        );
        properties.insert(
            "proj:shape".into(),
            serde_json::json!([spec.georef.height, spec.georef.width]),
        );
        let mut stac_extensions = vec![PROJECTION_EXT.to_string()];
        if spec.assets.values().any(|a| a.raster_bands.is_some()) {
            stac_extensions.push(RASTER_EXT.to_string());
        }
        if spec.assets.values().any(|a| a.eo_bands.is_some()) {
            stac_extensions.push(EO_EXT.to_string());
        }
        if spec
            .assets
            .values()
            .any(|a| a.extra.contains_key("classification:classes"))
        {
            stac_extensions.push(CLASSIFICATION_EXT.to_string());
        }
        let links = spec
            .self_href
            .into_iter()
            .map(|href| Link {
                rel: "self".into(),
                href,
                media_type: Some("application/json".into()),
                title: None,
            })
            .collect();
        Ok(Item {
            kind: "Feature".into(),
            stac_version: STAC_VERSION.into(),
            stac_extensions,
            id: spec.id,
            geometry,
            bbox,
            properties,
            links,
            assets: spec.assets,
        })
    }

    /// Adds (or replaces) an asset after the Item was built, declaring the extensions
    /// its fields use.
    pub fn insert_asset(&mut self, key: impl Into<String>, asset: Asset) {
        let mut uses = Vec::new();
        if asset.raster_bands.is_some() {
            uses.push(RASTER_EXT);
        }
        if asset.eo_bands.is_some() {
            uses.push(EO_EXT);
        }
        if asset.extra.contains_key("classification:classes") {
            uses.push(CLASSIFICATION_EXT);
        }
        for ext in uses {
            if !self.stac_extensions.iter().any(|e| e == ext) {
                self.stac_extensions.push(ext.to_string());
            }
        }
        self.assets.insert(key.into(), asset);
    }

    /// The provenance warnings recorded in the Item.
    pub fn warnings(&self) -> Vec<&str> {
        self.properties
            .get(WARNINGS_KEY)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
}

/// Appends `warning` to the string array under [`WARNINGS_KEY`], creating it (or
/// replacing a non-array value) as needed.
pub fn push_warning(properties: &mut Map<String, Value>, warning: &str) {
    let entry = properties
        .entry(WARNINGS_KEY)
        .or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = Value::Array(Vec::new());
    }
    if let Value::Array(a) = entry {
        a.push(Value::String(warning.to_string()));
    }
}

/// Writes `item` to `path` as pretty-printed JSON.
///
/// # Errors
/// [`ProductError::Io`] or [`ProductError::Json`] with the path.
pub fn write_item(path: &Path, item: &Item) -> Result<(), ProductError> {
    let file = std::fs::File::create(path).map_err(|e| ProductError::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut out, item).map_err(|source| ProductError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .map_err(|e| ProductError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::granule::GeoTransform;

    fn spec(sensing: Option<DateTime<Utc>>) -> ItemSpec {
        ItemSpec {
            id: "X".into(),
            sensing_time: sensing,
            processed: DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
                .unwrap()
                .into(),
            georef: GeoRef {
                epsg: 32633,
                transform: GeoTransform {
                    origin_x: 300000.0,
                    origin_y: 6200040.0,
                    pixel_width: 10.0,
                    pixel_height: -10.0,
                },
                width: 600,
                height: 500,
            },
            assets: BTreeMap::new(),
            properties: Map::new(),
            self_href: None,
        }
    }

    #[test]
    fn unknown_sensing_time_falls_back_with_a_warning() {
        let item = Item::build(spec(None)).unwrap();
        assert_eq!(item.properties["datetime"], "2026-11-24T10:00:00.000Z");
        assert_eq!(item.warnings().len(), 1);
        assert_eq!(item.stac_extensions, vec![PROJECTION_EXT.to_string()]);
        assert_eq!(item.properties["proj:shape"], serde_json::json!([500, 600]));
    }

    #[test]
    fn extensions_follow_asset_use() {
        let mut s = spec(Some(Utc::now()));
        let mut a = Asset::new("./superres.tif", MEDIA_COG, "SR", &["data"]);
        a.raster_bands = Some(vec![]);
        s.assets.insert("superres".into(), a);
        let item = Item::build(s).unwrap();
        assert!(item.warnings().is_empty());
        assert!(item.stac_extensions.contains(&RASTER_EXT.to_string()));
        assert!(!item.stac_extensions.contains(&EO_EXT.to_string()));
    }

    #[test]
    fn assets_added_later_declare_their_extensions() {
        let mut item = Item::build(spec(Some(Utc::now()))).unwrap();
        let legend = serde_json::json!([{"value": 0, "description": "x"}]);
        item.insert_asset("map", Asset::classification_map("./m.png", legend));
        item.insert_asset(
            "map2",
            Asset::classification_map("./m.png", serde_json::json!([])),
        );
        let n = item
            .stac_extensions
            .iter()
            .filter(|e| *e == CLASSIFICATION_EXT)
            .count();
        assert_eq!(n, 1);
        assert_eq!(item.assets["map"].roles, vec!["visual", "overview"]);
    }
}
