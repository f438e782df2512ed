#!/usr/bin/env bash
# The main job (README): set up, build, write the synthetic sample granule and process it
# end to end with the shipped models. Prints where the product is.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --bin s2edge   # the dev profile optimises dependencies (Cargo.toml); shares the test build
bin="${CARGO_TARGET_DIR:-target}/debug/s2edge"
work=${1:-/tmp/s2edge-demo}
mkdir -p "$work"
granule=$("$bin" sample "$work/ingest")
"$bin" process "$granule" --out "$work/products" --models models --config config/demo.toml
