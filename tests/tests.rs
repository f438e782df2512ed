//! The integration test binary (one binary, modules per area; helpers in `util`).

mod batch;
mod classmap;
mod cli;
mod crash;
mod daemon;
mod daemon_faults;
mod hostile;
mod metrics_http;
mod model;
mod packaging;
mod pipeline;
mod precision;
mod product;
mod raster;
mod readers_safe;
mod readers_tiff;
mod safe_fixture;
mod setup;
mod stac_mlm;
mod streaming;
#[cfg(feature = "train")]
mod train;
#[cfg(feature = "train")]
mod train_classify;
mod train_sr;
mod util;
