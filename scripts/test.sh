#!/usr/bin/env bash
# The whole test suite, set-up included (README: "Run the tests").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
cargo build --bins
cargo test --all-targets "$@"
# Installing the .deb changes the machine (/etc/s2edge, a system user): run that test
# alone, after everything else, when root can install packages.
if [ "$(id -u)" -eq 0 ] && [ $# -eq 0 ]; then
  S2EDGE_TEST_DPKG=1 cargo test --test tests packaging::deb_installs_validates_as_service_user_and_purges -- --exact --nocapture 2>&1 | tail -5
fi
