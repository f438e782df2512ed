#!/usr/bin/env bash
# The whole test suite, set-up included (README: "Run the tests").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
cargo build --bins
cargo test --all-targets "$@"
if [ $# -eq 0 ]; then
  # The MPI trainer (feature "train": burn + burn-onnx + rsmpi; ~15 min cold build once).
  # As root, OpenMPI needs these two to let the tests' mpirun start.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  # No separate `cargo build --features train`: the dev-dependencies change the feature set
  # of shared crates, so a plain build would compile the burn stack a second time; the
  # integration-test build below builds the s2edge-train binary it runs.
  # One test build for the library's trainer units and the integration tests that run
  # `s2edge-train` / `mpirun`; the filters go after `--` (cargo takes one name before it).
  cargo test --features train,mpi-batch --lib --test tests -- train:: train_classify:: train_sr:: batch::
fi
# Installing the .deb changes the machine (/etc/s2edge, a system user): run that test
# alone, after everything else, when root can install packages.
if [ "$(id -u)" -eq 0 ] && [ $# -eq 0 ]; then
  S2EDGE_TEST_DPKG=1 cargo test --test tests packaging::deb_installs_validates_as_service_user_and_purges -- --exact --nocapture 2>&1 | tail -5
fi
