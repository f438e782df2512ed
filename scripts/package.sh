#!/usr/bin/env bash
# Builds the Debian package target/debian/s2edge_<version>-1_<arch>.deb with cargo-deb.
#
#   scripts/package.sh                    release build, then package (the normal way)
#   scripts/package.sh --binary PATH      package an already built binary instead (the
#       [--fast] [--output DIR]           tests pass their debug build: no second build)
#
# Before cargo-deb runs it stages under target/deb-staging/ (the Cargo.toml assets):
#   - libonnxruntime.so from the venv's onnxruntime wheel (scripts/setup.sh makes the
#     venv), installed as /usr/lib/s2edge/libonnxruntime.so;
#   - s2edge.toml: config/s2edge.toml (the embedded defaults) with the packaged
#     choices applied by sed, never a hand-maintained fork: the library path above
#     and the classifier the package ships.
# Installs cargo-deb from crates.io (`cargo install --locked`) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" fast=() output=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift ;;
    --fast) fast=(--fast) ;;
    --output) output=(--output "$2"); shift ;;
    *) echo "package: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: installing cargo-deb" >&2
  cargo install cargo-deb --locked
fi

staging=target/deb-staging
mkdir -p "$staging"

# The ONNX Runtime library: the same wheel scripts/setup.sh installs.
py=.venv/bin/python
[ -x "$py" ] || { echo "package: no .venv; run scripts/setup.sh first" >&2; exit 1; }
lib_src=$("$py" -c "import onnxruntime, os, glob; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[0])")
cp "$lib_src" "$staging/libonnxruntime.so.tmp" && mv "$staging/libonnxruntime.so.tmp" "$staging/libonnxruntime.so"

# The classifier the package ships: the embedded default's (config/s2edge.toml).
classifier=$(sed -n 's/^classifier = "\([^"@]*\).*/\1/p' config/s2edge.toml)
[ -n "$classifier" ] && [ -d "models/$classifier" ] || {
  echo "package: the default classifier '$classifier' has no directory under models/" >&2; exit 1; }
sed -e 's|^# *onnxruntime = "\(/usr/lib/s2edge/libonnxruntime.so\)".*$|onnxruntime = "\1"   # the packaged CPU build|' \
    -e 's|^# *tensorrt_cache = "\(/var/cache/s2edge/[^"]*\)".*$|tensorrt_cache = "\1"   # CacheDirectory of the unit|' \
    -e "s|^classifier = \"[^\"]*\"|classifier = \"$classifier\"|" \
    config/s2edge.toml > "$staging/s2edge.toml.tmp"
# sed succeeds when a pattern stops matching (someone edited the defaults): check.
for want in '^onnxruntime = "/usr/lib/s2edge/libonnxruntime.so"' \
            '^tensorrt_cache = "/var/cache/s2edge/' "^classifier = \"$classifier\""; do
  grep -q "$want" "$staging/s2edge.toml.tmp" || {
    echo "package: config/s2edge.toml changed shape; '$want' not produced" >&2; exit 1; }
done
mv "$staging/s2edge.toml.tmp" "$staging/s2edge.toml"

args=("${fast[@]}" "${output[@]}")
if [ -n "$binary" ]; then
  # cargo-deb takes the binary from <target dir>/release/ (the magic `target/release/`
  # asset prefix) and warns that its dev profile support is going away: give it a
  # private target dir holding just this binary, and no build. --strip drops the
  # ~120 MB of debug info a debug build carries.
  [ -x "$binary" ] || { echo "package: $binary is not an executable" >&2; exit 1; }
  export CARGO_TARGET_DIR=$PWD/$staging/cargo-target
  mkdir -p "$CARGO_TARGET_DIR/release"
  cp "$binary" "$CARGO_TARGET_DIR/release/s2edge.tmp"
  mv "$CARGO_TARGET_DIR/release/s2edge.tmp" "$CARGO_TARGET_DIR/release/s2edge"
  args+=(--no-build --strip)
  cargo deb "${args[@]}"
  rm -f "$CARGO_TARGET_DIR/release/s2edge"   # a copy of a ~130 MB debug binary
else
  cargo deb --locked "${args[@]}"
fi
