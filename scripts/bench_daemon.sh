#!/usr/bin/env bash
# Daemon benchmark (BENCHMARKS.md "## Daemon"):
#  1. latency from a granule becoming ready (marker written) to its processing starting,
#     one granule at a time on an idle daemon, from the ledger's ready_at/started_at;
#  2. throughput for N small granules through `s2edge serve`, beside `s2edge process`
#     run on each in turn.
# Granules are 240x240 px crops of `s2edge sample` (GDAL's COG driver), processed with
# the tiny fixture models. Usage: scripts/bench_daemon.sh [N] (default 20).
set -euo pipefail
N=${1:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${S2EDGE:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/s2edge}
[ -x "$BIN" ] || { echo "build first: cargo build (or set S2EDGE=path/to/s2edge)" >&2; exit 1; }
W=$(mktemp -d /tmp/s2edge-bench-daemon.XXXXXX)
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

"$BIN" sample "$W/src" >/dev/null
S=$(ls -d "$W"/src/*/)
mkdir -p "$W/tpl"
for f in "$S"B*.tif; do
  b=$(basename "$f" .tif)
  case $b in B02|B03|B04|B08) off=300; n=240;; B01|B09) off=50; n=40;; *) off=150; n=120;; esac
  gdal_translate -q -of COG -srcwin $off $off $n $n "$f" "$W/tpl/$b.tif"
done

cat > "$W/c.toml" <<TOML
[paths]
ingest = "$W/in"
work = "$W/work"
output = "$W/out"
quarantine = "$W/q"
archive = "$W/archive"
models = "$ROOT/tests/fixtures/models"
state = "$W/state"
[ingest]
ready = "marker"
rescan_interval = "1s"
after = "delete"
[models]
classifier = "tiny-ben19"
superres_2x = "tiny-dsen2-2x"
superres_6x = "tiny-dsen2-6x"
[http]
listen = "127.0.0.1:$PORT"
[log]
level = "warn"
TOML

deliver() { cp -r "$W/tpl" "$W/in/.$1.part"; mv "$W/in/.$1.part" "$W/in/$1"; touch "$W/in/$1.ready"; }
done_count() { sqlite3 "$W/state/ledger.sqlite" "select count(*) from granules where state='done' and id like '$1%'" 2>/dev/null || echo 0; }

# One-shot baseline: `s2edge process` on each granule in turn (models loaded each time).
mkdir -p "$W/oneshot"
t0=$(date +%s.%N)
for i in $(seq 1 "$N"); do
  cp -r "$W/tpl" "$W/oneshot/S2B_ONE_$i"
  "$BIN" --config "$W/c.toml" process "$W/oneshot/S2B_ONE_$i" --out "$W/oneshot-out" >/dev/null 2>&1
done
t1=$(date +%s.%N)
oneshot=$(echo "$t1 - $t0" | bc -l)

mkdir -p "$W/in"
"$BIN" --config "$W/c.toml" serve 2>"$W/daemon.log" &
PID=$!
until curl -sf "127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.2; done

# Latency, one granule at a time on an idle daemon.
for i in 1 2 3 4 5; do
  deliver "S2B_LAT_$i"
  until [ "$(done_count S2B_LAT_$i)" = 1 ]; do sleep 0.1; done
done
lat=$(sqlite3 "$W/state/ledger.sqlite" "select printf('%.0f %.0f', avg(ms), max(ms)) from (select (julianday(started_at)-julianday(ready_at))*86400000 as ms from granules where id like 'S2B_LAT_%')")

# Throughput: N granules dropped at once.
t0=$(date +%s.%N)
for i in $(seq 1 "$N"); do deliver "S2B_TP_$i"; done
until [ "$(done_count S2B_TP_)" = "$N" ]; do sleep 0.2; done
t1=$(date +%s.%N)
served=$(echo "$t1 - $t0" | bc -l)
kill -TERM "$PID"; wait "$PID" || true; PID=

printf 'granules: %d x 240x240 px (12 bands), tiny fixture models, binary %s\n' "$N" "$BIN"
printf 'ready->start latency (ms, 5 granules on an idle daemon): mean %s, max %s\n' $lat
printf 's2edge process, each in turn: %.1f s total, %.2f s/granule\n' "$oneshot" "$(echo "$oneshot / $N" | bc -l)"
printf 's2edge serve, all at once:    %.1f s total, %.2f s/granule\n' "$served" "$(echo "$served / $N" | bc -l)"
