#!/usr/bin/env bash
# Installs everything s2edge needs on a fresh Debian machine with Rust, Python 3 and pip:
#   - Debian packages: GDAL tools (the independent reader in tests), OpenJPEG tools,
#     sqlite3, OpenMPI (trainer), clang (bindgen), systemd (systemd-analyze checks the
#     unit in tests/packaging.rs; installing it does not make it PID 1);
#   - a project venv (.venv) with the PyPI onnxruntime wheel (libonnxruntime.so), onnx
#     (test-model generator) and rio-cogeo (COG validation);
#   - the ONNX Runtime library copied to ~/.local/lib/s2edge, where the binary looks
#     for it (DESIGN.md: library resolution order, step 3).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.32.0
need_apt=()
for pair in gdalinfo:gdal-bin opj_compress:libopenjp2-tools sqlite3:sqlite3 systemd-analyze:systemd mpirun:openmpi-bin mpicc:libopenmpi-dev; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# libclang for rsmpi's bindgen (the trainer, cargo feature "train").
if ! compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null && ! compgen -G "/usr/lib/x86_64-linux-gnu/libclang*.so*" >/dev/null; then
  need_apt+=(libclang-dev)
fi
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then need_apt+=(python3-venv); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import onnxruntime, onnx, rio_cogeo, numpy; assert onnxruntime.__version__ == '$ORT_VERSION'" >/dev/null 2>&1; then
  echo "setup: installing Python packages into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check \
    "onnxruntime==$ORT_VERSION" "onnx>=1.16" "numpy" "rio-cogeo>=5"
fi

lib_src=$(.venv/bin/python -c "import onnxruntime, os, glob; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[0])")
dest=${S2EDGE_ORT_DIR:-$HOME/.local/lib/s2edge}
mkdir -p "$dest"
if ! cmp -s "$lib_src" "$dest/libonnxruntime.so"; then
  cp "$lib_src" "$dest/libonnxruntime.so.tmp" && mv "$dest/libonnxruntime.so.tmp" "$dest/libonnxruntime.so"
fi
echo "setup: ONNX Runtime $ORT_VERSION at $dest/libonnxruntime.so" >&2
