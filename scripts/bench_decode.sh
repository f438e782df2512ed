#!/usr/bin/env bash
# Band-decoding throughput on a full-size Sentinel-2 band (10980 x 10980 uint16).
#
# Builds the band by tiling the real crop's B02 (600 x 600) 19 x 19 times and cutting
# it to 10980 x 10980, writes it as lossless JPEG 2000 (GDAL JP2OpenJPEG, 1024 x 1024
# tiles as in real products) and as a tiled DEFLATE GeoTIFF (predictor 2), then times in
# the same run:
#   - s2edge's JPEG 2000 decoder (examples/decode_band.rs, built with `--profile test`:
#     dependencies at opt-level 2, the s2edge crate at opt-level 1; no release build);
#   - opj_decompress (OpenJPEG CLI, writes a .raw);
#   - gdal_translate -of ENVI from the JP2 and from the GeoTIFF;
#   - the tiff crate decoding the GeoTIFF (through the same example).
# MB/s = uncompressed uint16 bytes (10980*10980*2 = 241.1 MB) / seconds.
#
# Usage: scripts/bench_decode.sh [REPS]   (default 2; the build machine is shared)
# Needs: gdal-bin, libopenjp2-tools, the project venv's numpy (.venv/bin/python).
set -euo pipefail

REPS="${1:-2}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CROP="${CROP:-$ROOT/../shared/data/s2-crops/S2A_33UUB_20170527_0_L1C/B02.tif}"
WORK="${WORK:-/tmp/s2edge-bench-decode}"
PY="${PY:-$ROOT/.venv/bin/python}"
N=10980
BYTES=$((N * N * 2))
THREADS="$(nproc)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

mkdir -p "$WORK"
cd "$WORK"

if [[ ! -f band.jp2 || ! -f band.tif ]]; then
    echo "# making the ${N}x${N} band from $CROP" >&2
    gdal_translate -q -of ENVI "$CROP" crop.raw
    "$PY" - <<PY
import numpy as np
a = np.fromfile("crop.raw", dtype="<u2").reshape(600, 600)
big = np.tile(a, (19, 19))[:$N, :$N]
big.tofile("band.raw")
PY
    cat > band.hdr <<HDR
ENVI
samples = $N
lines = $N
bands = 1
header offset = 0
file type = ENVI Standard
data type = 12
interleave = bsq
byte order = 0
HDR
    gdal_translate -q -a_srs EPSG:32633 -a_ullr 300000 6200040 409800 6090240 -a_nodata 0 \
        -of JP2OpenJPEG -co QUALITY=100 -co REVERSIBLE=YES \
        -co BLOCKXSIZE=1024 -co BLOCKYSIZE=1024 band.raw band.jp2
    gdal_translate -q -a_srs EPSG:32633 -a_ullr 300000 6200040 409800 6090240 -a_nodata 0 \
        -of GTiff -co TILED=YES -co COMPRESS=DEFLATE -co PREDICTOR=2 band.raw band.tif
    rm -f crop.raw crop.hdr crop.raw.aux.xml band.raw band.hdr
fi
ls -l band.jp2 band.tif >&2

echo "# building the timing example" >&2
(cd "$ROOT" && cargo build -q --profile test --example decode_band)
EXAMPLE="$CARGO_TARGET_DIR/debug/examples/decode_band"

mbps() { awk -v b="$BYTES" -v s="$1" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }

# Best of REPS wall-clock runs of a command, in seconds.
best_of() {
    local best="" t0 t1 dt
    for _ in $(seq "$REPS"); do
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1
        t1=$(date +%s.%N)
        dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        if [[ -z "$best" ]] || awk -v a="$dt" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best="$dt"
        fi
    done
    echo "$best"
}

report() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$(mbps "$3")"; }

echo "| decoder | input | best of $REPS (s) | MB/s |"
echo "| --- | --- | --- | --- |"
for f in band.jp2 band.tif; do
    line="$("$EXAMPLE" --reps "$REPS" "$f")"
    s="$(sed -E 's/.*best_s=([0-9.]+).*/\1/' <<<"$line")"
    dec="$(sed -E 's/.*decoder=([^ ]+).*/\1/' <<<"$line")"
    report "$dec" "$f" "$s"
done
report "opj_decompress -threads $THREADS" band.jp2 \
    "$(best_of opj_decompress -threads "$THREADS" -i band.jp2 -o out_opj.raw)"
report "gdal_translate -of ENVI" band.jp2 \
    "$(best_of gdal_translate -q -of ENVI band.jp2 out_gdal_jp2.raw)"
report "gdal_translate -of ENVI" band.tif \
    "$(best_of gdal_translate -q -of ENVI band.tif out_gdal_tif.raw)"

# The decoders must agree: s2edge's pixels against opj_decompress's raw output, and
# that against GDAL's.
"$EXAMPLE" --check out_opj.raw band.jp2 >&2
cmp -s out_opj.raw out_gdal_jp2.raw && echo "# opj_decompress and GDAL outputs are identical" >&2 \
    || { echo "# ERROR: opj_decompress and GDAL outputs differ" >&2; exit 1; }
rm -f out_opj.raw out_gdal_jp2.* out_gdal_tif.*
echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -srm)" >&2
