#!/usr/bin/env bash
# Peak memory (RSS) of `s2edge process` on a full-size granule (issue 3).
#
# Builds a 10980 x 10980 per-band GeoTIFF folder by tiling the real crop's bands
# (`../shared/data/s2-crops/S2A_33UUB_20170527_0_L1C`: 600^2 at 10 m, 300^2 at 20 m,
# 100^2 at 60 m) 19 x 19 times and cutting them to 10980^2 / 5490^2 / 1830^2, written by
# GDAL as tiled DEFLATE GeoTIFFs (predictor 2, as the public COG buckets ship bands;
# about 1.2 GB on disk, 1.34 GB as uint16 in memory), then runs the whole pipeline
# (super-resolution 2x and 6x, classification, all products) once under
# `/usr/bin/time -v`, with the smallest models that have the real models' inputs and
# outputs: the test fixtures tiny-ben19, tiny-dsen2-2x@1, tiny-dsen2-6x (memory is what
# is measured, not inference speed). Settings are the shipped defaults (sr_tile 504,
# batch 8, CPU provider) except the models.
#
# While it runs, the process's VmRSS is sampled every 0.5 s from /proc into
# $WORK/rss.tsv, so the peak can be placed in a stage.
#
# Usage: scripts/bench_rss.sh        (one run; several minutes on 2 cores)
# Needs: gdal-bin, GNU time (Debian package `time`), the project venv's numpy.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CROP="${CROP:-$ROOT/../shared/data/s2-crops/S2A_33UUB_20170527_0_L1C}"
WORK="${WORK:-/tmp/s2edge-bench-rss}"
PY="${PY:-$ROOT/.venv/bin/python}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# Release-like code generation for s2edge without a release build of the dependency tree
# (the shared build machine cannot afford one): the test profile, which keeps the
# dependencies at opt-level 2, with s2edge itself at opt-level 3 and without debug
# assertions or overflow checks, as in release.
BUILD_FLAGS=(--profile test --config profile.test.opt-level=3
    --config profile.test.debug-assertions=false --config profile.test.overflow-checks=false)
export RUST_LOG="${RUST_LOG:-warn}"

[[ -d "$CROP" ]] || { echo "SKIP: $CROP is absent" >&2; exit 0; }
[[ -x /usr/bin/time ]] || { echo "needs GNU time: apt-get install time" >&2; exit 1; }
mkdir -p "$WORK"
GRANULE="$WORK/$(basename "$CROP")"

if [[ ! -f "$GRANULE/B12.tif" ]]; then
    avail_gb=$(df -BG --output=avail "$WORK" | tail -n 1 | tr -dc 0-9)
    ((avail_gb >= 8)) || { echo "need 8 GB free in $WORK, have ${avail_gb} GB" >&2; exit 1; }
    echo "# making the 10980^2 granule in $GRANULE" >&2
    mkdir -p "$GRANULE.tmp"
    for tif in "$CROP"/B*.tif; do
        band="$(basename "$tif" .tif)"
        gdal_translate -q -of ENVI "$tif" "$GRANULE.tmp/$band.crop"
        size=$("$PY" - "$GRANULE.tmp/$band.crop" "$GRANULE.tmp/$band.raw" <<'PY'
import sys
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
a = np.fromfile(src, dtype="<u2")
side = int(round(a.size ** 0.5))
full = {600: 10980, 300: 5490, 100: 1830}[side]
np.tile(a.reshape(side, side), (19, 19))[:full, :full].tofile(dst)
print(full)
PY
)
        cat >"$GRANULE.tmp/$band.hdr" <<HDR
ENVI
samples = $size
lines = $size
bands = 1
header offset = 0
file type = ENVI Standard
data type = 12
interleave = bsq
byte order = 0
HDR
        gdal_translate -q -a_srs EPSG:32633 -a_ullr 300000 6200040 409800 6090240 -a_nodata 0 \
            -of GTiff -co TILED=YES -co COMPRESS=DEFLATE -co PREDICTOR=2 \
            "$GRANULE.tmp/$band.raw" "$GRANULE.tmp/$band.tif"
        rm -f "$GRANULE.tmp/$band".{crop,raw,hdr} "$GRANULE.tmp/$band".*.aux.xml "$GRANULE.tmp/$band.crop.hdr"
    done
    mkdir -p "$GRANULE"
    mv "$GRANULE.tmp"/B*.tif "$GRANULE"/
    rm -rf "$GRANULE.tmp"
fi
du -sh "$GRANULE" >&2

cat >"$WORK/tiny.toml" <<'TOML'
# bench_rss.sh: the smallest models with the real models' inputs; shipped defaults otherwise.
[models]
classifier = "tiny-ben19"
superres_2x = "tiny-dsen2-2x@1"
superres_6x = "tiny-dsen2-6x"
TOML

echo "# building s2edge" >&2
# The same targets as bench_pipeline.sh, so that the two scripts share one build.
(cd "$ROOT" && cargo build -q "${BUILD_FLAGS[@]}" --bin s2edge --example bench_infer)
S2EDGE="$CARGO_TARGET_DIR/debug/s2edge"

rm -rf "$WORK/out"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
/usr/bin/time -v -o "$WORK/time.txt" "$S2EDGE" --config "$WORK/tiny.toml" process "$GRANULE" \
    --out "$WORK/out" --models "$ROOT/tests/fixtures/models" 2>"$WORK/process.err" &
TIME_PID=$!
# Sample the s2edge child's RSS (MiB) with a timestamp until it exits.
: >"$WORK/rss.tsv"
t0=$(date +%s.%N)
while kill -0 "$TIME_PID" 2>/dev/null; do
    child=$(pgrep -P "$TIME_PID" 2>/dev/null | head -n 1 || true)
    if [[ -n "$child" && -r "/proc/$child/status" ]]; then
        rss=$(awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$child/status" 2>/dev/null || true)
        [[ -n "$rss" ]] && printf '%.1f\t%s\n' "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')" "$rss" >>"$WORK/rss.tsv"
    fi
    sleep 0.5
done
wait "$TIME_PID"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

grep -v "^\s*$" "$WORK/process.err" | grep -v "WARN\|INFO" >&2 || true
grep -E "Maximum resident|Elapsed \(wall|User time|System time|Exit status" "$WORK/time.txt"
ls -l "$WORK"/out/*/ >&2
echo "# RSS samples (s, MiB): $WORK/rss.tsv; peak sample: $(sort -k2 -n "$WORK/rss.tsv" | tail -n 1)" >&2
