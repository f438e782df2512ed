#!/usr/bin/env bash
# s2edge against the usual Python script (issue 9), side by side in ONE run.
#
# Granules: per-band GeoTIFF folders of 1, 4, 16 and 121 blocks of 1098^2 px at 10 m
# (1098^2, 2196^2, 4392^2, 10980^2 = the full tile), made by tiling the real crop
# `../shared/data/s2-crops/S2A_33UUB_20170527_0_L1C` (600^2 / 300^2 / 100^2) and cutting
# (benches/reference/make_granule.py), written as tiled DEFLATE GeoTIFFs.
# For each granule, REPS rounds, alternating which tool goes first:
#   s2edge  `s2edge --config C process G --out O --models models --only superres`
#   python  `benches/reference/dsen2_reference.py G O/superres.tif --models models`
# same shipped models (dsen2-2x, dsen2-6x, latest versions), ONNX Runtime's default
# thread count in both, under /usr/bin/time -v (wall, peak RSS). Then the bare limit
# (examples/bare_limit.rs: best bare throughput over tiles 128..540 x batches 1..8) and
# s2edge's super-resolution time against it, over the padded pixels it computed (from
# its "super-resolution done" log lines: halo recomputation counted as overhead).
#
# Usage: scripts/bench_vs_python.sh [BLOCKS...]   (default: 1 4 16 121)
#        REPS=2 (rounds per granule)  SKIP_BARE=1 (no bare sweep)
#        INT8=1 (a third tool in the rotation: s2edge with [runtime] precision = "int8")  WORK=/tmp/s2edge-vs-python  S2EDGE=… BARE=… (prebuilt)
#        PROVIDERS=cuda,cpu (ONNX Runtime execution providers of both tools, in order; default cpu.
#          The GPU ones need the onnxruntime-gpu wheel in $PY and its library in s2edge's
#          [runtime] onnxruntime, e.g. S2EDGE__RUNTIME__ONNXRUNTIME=…)
#        BARE_TILES=540,840,960,1212 BARE_BATCHES=1,2 (the bare sweep)  TIME=/usr/bin/time (GNU time)
# Prints markdown tables on stdout; raw lines in $WORK/raw.txt.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CROP="${CROP:-$ROOT/../shared/data/s2-crops/S2A_33UUB_20170527_0_L1C}"
WORK="${WORK:-/tmp/s2edge-vs-python}"
PY="${PY:-$ROOT/.venv/bin/python}"
REPS="${REPS:-2}"
BLOCKS=("${@:-1 4 16 121}")
read -r -a BLOCKS <<<"${BLOCKS[*]}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# The test profile with s2edge at opt-level 3 (dependencies stay at the profile's
# opt-level 2, so the ones `cargo test` built are reused; turning debug assertions off as
# scripts/bench_pipeline.sh does would rebuild every dependency, ~30 min on 2 shared cores).
BUILD_FLAGS=(--profile test --config profile.test.opt-level=3)

[[ -d "$CROP" ]] || { echo "SKIP: $CROP is absent" >&2; exit 0; }
PROVIDERS="${PROVIDERS:-cpu}"
TIME="${TIME:-/usr/bin/time}"
[[ -x "$TIME" ]] || { echo "needs GNU time: apt-get install time" >&2; exit 1; }
"$PY" -c "import scipy, rasterio, onnxruntime" || { echo "needs scipy, rasterio, onnxruntime in $PY (scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$WORK"
RAW="$WORK/raw.txt"
: >"$RAW"

# S2EDGE and BARE may name already built binaries (same BUILD_FLAGS) to skip the build.
if [[ -z "${S2EDGE:-}" || -z "${BARE:-}" ]]; then
    echo "# building s2edge and examples/bare_limit" >&2
    (cd "$ROOT" && cargo build -q "${BUILD_FLAGS[@]}" --bin s2edge --example bare_limit)
    S2EDGE="$CARGO_TARGET_DIR/debug/s2edge"
    BARE="$CARGO_TARGET_DIR/debug/examples/bare_limit"
fi
CONFIG="$WORK/s2edge.toml"
providers_toml=$(sed 's/[^,][^,]*/"&"/g; s/,/, /g' <<<"$PROVIDERS")
cat >"$CONFIG" <<TOML
[runtime]
intra_threads = 0
providers = [$providers_toml]
[pipeline]
classify = false
TOML
CONFIG_INT8="$WORK/s2edge-int8.toml"
sed 's/^\[runtime\]$/[runtime]\nprecision = "int8"/' "$CONFIG" >"$CONFIG_INT8"
TOOLS=(s2edge python)
[[ -n "${INT8:-}" ]] && TOOLS+=(s2edge-int8)

rss_kb() { grep "Maximum resident set size" "$1" | tr -dc 0-9; }
wall_s() { awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$1"; }

declare -A S_WALL S_RSS P_WALL P_RSS S_SR S_PADDED
for blocks in "${BLOCKS[@]}"; do
    # 121 stands for the full tile, 10980^2 (issue 9), not 11 x 1098 = 12078.
    side=$(python3 -c "import math; b=$blocks; print(10980 if b == 121 else int(round(math.sqrt(b))) * 1098)")
    G="$WORK/granules/S2_BENCH_${blocks}"
    if [[ ! -f "$G/B12.tif" ]]; then
        echo "# making $G ($side^2)" >&2
        "$PY" "$ROOT/benches/reference/make_granule.py" "$CROP" "$G" "$side"
    fi
    for ((rep = 0; rep < REPS; rep++)); do
        # Rotate the tools each round, so none always runs first.
        k=$(((rep + blocks) % ${#TOOLS[@]}))
        order=("${TOOLS[@]:k}" "${TOOLS[@]:0:k}")
        for tool in "${order[@]}"; do
            out="$WORK/out/$tool-$blocks"
            rm -rf "$out" && mkdir -p "$out"
            log="$WORK/$tool-$blocks-$rep.log"
            echo "# $tool $blocks blocks, round $rep (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
            if [[ $tool == s2edge* ]]; then
                cfg="$CONFIG"; [[ $tool == s2edge-int8 ]] && cfg="$CONFIG_INT8"
                RUST_LOG=s2edge=info "$TIME" -v "$S2EDGE" --config "$cfg" process "$G" \
                    --out "$out" --models "$ROOT/models" --only superres >"$log.out" 2>"$log"
            else
                "$TIME" -v "$PY" "$ROOT/benches/reference/dsen2_reference.py" "$G" \
                    "$out/superres.tif" --models "$ROOT/models" --providers "$PROVIDERS" >"$log.out" 2>"$log"
            fi
            w=$(wall_s "$log"); r=$(rss_kb "$log")
            echo "run tool=$tool blocks=$blocks rep=$rep wall_s=$w rss_kb=$r load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$RAW" >&2
            if [[ $tool == s2edge ]]; then
                # per model: super-resolution busy time and padded pixels computed
                grep "super-resolution done" "$log" | sed 's/\x1b\[[0-9;]*m//g' | while read -r line; do
                    m=$(sed -n 's/.*model=\([^ ]*\).*/\1/p' <<<"$line")
                    b=$(sed -n 's/.*busy_s=\([0-9.]*\).*/\1/p' <<<"$line")
                    px=$(sed -n 's/.*padded_mpx=\([0-9.]*\).*/\1/p' <<<"$line")
                    echo "sr blocks=$blocks rep=$rep model=$m busy_s=$b padded_mpx=$px" >>"$RAW"
                done
            fi
        done
    done
done

if [[ -z "${SKIP_BARE:-}" ]]; then
echo "# bare limit" >&2
"$BARE" --config "$CONFIG" --models "$ROOT/models" --reps 2 --tiles "${BARE_TILES:-540,840,960,1212}" --batches "${BARE_BATCHES:-1,2}" | tee -a "$RAW" >&2
fi
"$PY" - "$RAW" <<'PY'
import sys, collections
runs = collections.defaultdict(list)   # (tool, blocks) -> [(wall, rss, rep)]
sr = collections.defaultdict(dict)     # (blocks, rep) -> model -> (busy, padded)
limit = {}
for line in open(sys.argv[1]):
    kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    if line.startswith("run "):
        runs[(kv["tool"], int(kv["blocks"]))].append((float(kv["wall_s"]), int(kv["rss_kb"]), int(kv["rep"]), kv["load"]))
    elif line.startswith("sr "):
        sr[(int(kv["blocks"]), int(kv["rep"]))][kv["model"]] = (float(kv["busy_s"]), float(kv["padded_mpx"]))
    elif line.startswith("limit "):
        limit[kv["model"]] = float(kv["mpx_s"])
blocks = sorted({b for (_, b) in runs})
print("| granule (10 m px) | s2edge wall, best (s) | Python wall, best (s) | Python / s2edge | s2edge peak RSS (MiB) | Python peak RSS (MiB) | RSS s2edge / Python | load avg at the runs |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for b in blocks:
    s, p = runs[("s2edge", b)], runs[("python", b)]
    sw, pw = min(r[0] for r in s), min(r[0] for r in p)
    srss, prss = max(r[1] for r in s), max(r[1] for r in p)
    side = 10980 if b == 121 else round(b ** 0.5) * 1098
    loads = ", ".join(r[3] for r in s + p)
    print(f"| {side}² ({b} blocks) | {sw:.1f} | {pw:.1f} | **{pw / sw:.2f}** | {srss / 1024:.0f} | {prss / 1024:.0f} | **{srss / prss:.2f}** | {loads} |")
if any(t == "s2edge-int8" for (t, _) in runs):
    print()
    print("| granule (10 m px) | s2edge int8 wall, best (s) | s2edge float32 / int8 | Python / s2edge int8 | s2edge int8 peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- |")
    for b in blocks:
        i, s, p = runs[("s2edge-int8", b)], runs[("s2edge", b)], runs[("python", b)]
        iw, sw, pw = (min(r[0] for r in x) for x in (i, s, p))
        side = 10980 if b == 121 else round(b ** 0.5) * 1098
        print(f"| {side}² ({b} blocks) | {iw:.1f} | **{sw / iw:.2f}** | **{pw / iw:.2f}** | {max(r[1] for r in i) / 1024:.0f} |")
print()
print("Bare limit (best bare `LoadedModel::run` throughput over tiles x batches, padded input Mpx/s): "
      + ", ".join(f"{m} {v:.3f}" for m, v in limit.items()))
print()
print("| granule | model | SR busy (s) | padded Mpx computed | time at the bare limit (s) | SR / limit |")
print("| --- | --- | --- | --- | --- | --- |")
for b in blocks:
    best_rep = min(runs[("s2edge", b)], key=lambda r: r[0])[2]
    for m, (busy, px) in sorted(sr.get((b, best_rep), {}).items()):
        lim = limit.get(m)
        if lim:
            at = px / lim
            print(f"| {b} blocks | {m} | {busy:.1f} | {px:.1f} | {at:.1f} | **{busy / at:.2f}** |")
PY
