//! The integration test binary (one binary, modules per area; helpers in `util`).

mod readers_safe;
mod safe_fixture;
mod util;
