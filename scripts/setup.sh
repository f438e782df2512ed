#!/usr/bin/env bash
# Installs everything s2edge needs on a fresh Debian machine with Rust, Python 3 and pip:
#   - Debian packages (decided by package state, `dpkg-query`, never by globbing for files
#     that other packages may also ship):
#       gdal-bin          gdalinfo/gdal_translate/gdaltransform, the independent reader in tests
#       libopenjp2-tools  opj_compress/opj_decompress (JPEG 2000 fixtures)
#       sqlite3           the ledger's CLI, used by tests
#       systemd           systemd-analyze checks the unit (installing it does not make it PID 1)
#       openmpi-bin       mpirun (trainer tests, `s2edge batch` under MPI)
#       libopenmpi-dev    mpicc + headers for rsmpi (feature "train")
#       libclang-dev      libclang.so for rsmpi's bindgen (feature "train")
#       time              /usr/bin/time -v for the memory benchmarks
#       strace            strace -f -e trace=file: the hostile-corpus test checks what the daemon opens
#       python3-venv      the project venv
#   - a project venv (.venv) with the PyPI onnxruntime wheel (libonnxruntime.so), onnx
#     (test-model generator) and rio-cogeo (COG validation);
#   - the ONNX Runtime library copied to ~/.local/lib/s2edge, where the binary looks
#     for it (DESIGN.md: library resolution order, step 3).
# Idempotent: a second run only checks. After installing, every requirement is checked
# again and a missing one stops here with its name, not minutes later in a build script.
#
# Environment:
#   S2EDGE_SETUP_PACKAGES   override the package list (space-separated; tests)
#   S2EDGE_SETUP_APT_ONLY=1 stop after the Debian packages (tests of this script)
#   S2EDGE_ORT_DIR          where to put libonnxruntime.so (default ~/.local/lib/s2edge)
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.32.0
PACKAGES=${S2EDGE_SETUP_PACKAGES:-"gdal-bin libopenjp2-tools sqlite3 systemd openmpi-bin libopenmpi-dev libclang-dev time python3-venv strace"}

# A package counts as present only when dpkg says "install ok installed".
installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

need_apt=()
for pkg in $PACKAGES; do
  installed "$pkg" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  missing=()
  for pkg in "${need_apt[@]}"; do
    installed "$pkg" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: error: still not installed after apt-get install: ${missing[*]}" >&2
    echo "setup: install them by hand (apt-get install ${missing[*]}) and run this again" >&2
    exit 1
  fi
fi
echo "setup: Debian packages present: $PACKAGES" >&2
[ "${S2EDGE_SETUP_APT_ONLY:-0}" = 1 ] && exit 0

# The tools the scripts and tests call, checked once here so that a broken install fails
# now with a name, not later inside a test or a build script.
for cmd in gdalinfo gdal_translate opj_compress sqlite3 systemd-analyze mpirun mpicc; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "setup: error: '$cmd' not on PATH after installing its package" >&2; exit 1; }
done

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import onnxruntime, onnx, rio_cogeo, numpy, jsonschema, scipy; assert onnxruntime.__version__ == '$ORT_VERSION'" >/dev/null 2>&1; then
  echo "setup: installing Python packages into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check \
    "onnxruntime==$ORT_VERSION" "onnx>=1.16" "numpy" "rio-cogeo>=5" "jsonschema>=4.18" "scipy"
fi
.venv/bin/python -c "import onnxruntime, onnx, rio_cogeo, numpy" || { echo "setup: error: the .venv lacks onnxruntime/onnx/rio-cogeo/numpy after pip install" >&2; exit 1; }

lib_src=$(.venv/bin/python -c "import onnxruntime, os, glob; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[0])")
dest=${S2EDGE_ORT_DIR:-$HOME/.local/lib/s2edge}
mkdir -p "$dest"
if ! cmp -s "$lib_src" "$dest/libonnxruntime.so"; then
  cp "$lib_src" "$dest/libonnxruntime.so.tmp" && mv "$dest/libonnxruntime.so.tmp" "$dest/libonnxruntime.so"
fi
echo "setup: ONNX Runtime $ORT_VERSION at $dest/libonnxruntime.so" >&2
