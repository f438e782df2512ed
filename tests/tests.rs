//! The integration test binary (one binary, modules per area; helpers in `util`).

mod crash;
mod daemon;
mod daemon_faults;
mod hostile;
mod model;
mod packaging;
mod pipeline;
mod product;
mod raster;
mod readers_safe;
mod readers_tiff;
mod safe_fixture;
mod setup;
#[cfg(feature = "train")]
mod train;
mod util;
