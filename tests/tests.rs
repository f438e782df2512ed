//! The integration test binary (one binary, modules per area; helpers in `util`).

mod readers_tiff;
mod util;
