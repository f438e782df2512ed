//! The integration test binary (one binary, modules per area; helpers in `util`).

mod daemon;
mod model;
mod packaging;
mod pipeline;
mod product;
mod raster;
mod readers_safe;
mod readers_tiff;
mod safe_fixture;
mod setup;
mod streaming;
#[cfg(feature = "train")]
mod train;
mod util;
