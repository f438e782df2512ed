//! The integration test binary (one binary, modules per area; helpers in `util`).

mod product;
mod util;
