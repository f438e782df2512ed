#!/usr/bin/env bash
# The whole test suite, set-up included (README: "Run the tests").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
cargo build --bins
cargo test --all-targets "$@"
