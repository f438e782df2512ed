//! The integration test binary (one binary, modules per area; helpers in `util`).

mod util;
mod product;
