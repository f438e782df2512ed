#!/usr/bin/env bash
# The whole test suite, set-up included (README: "Run the tests").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
cargo build --bins
cargo test --all-targets "$@"
# The MPI trainer (feature "train": burn + burn-onnx + rsmpi; ~15 min cold build once).
# As root, OpenMPI needs these two to let the tests' mpirun start.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cargo build --features train --bin s2edge-train
cargo test --features train --lib train:: "$@"
cargo test --features train --test tests train:: "$@"
