#!/usr/bin/env bash
# The daemon on a queue against one-by-one `s2edge process` (issue 9, BENCHMARKS.md "The daemon on a
# queue"): 4 copies of the 1098² benchmark granule (scripts/bench_vs_python.sh makes it), classify off.
# Usage: S2=target/release/s2edge G=/tmp/s2edge-vs-python/granules/S2_BENCH_1 scripts/bench_daemon_queue.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
S2="${S2:-target/release/s2edge}"
G="${G:-/tmp/s2edge-vs-python/granules/S2_BENCH_1}"
D=/tmp/dq; rm -rf $D; mkdir -p $D/ingest $D/seq
cat > $D/c.toml <<TOML
[paths]
ingest = "$D/ingest"
work = "$D/work"
output = "$D/out"
quarantine = "$D/quarantine"
archive = "$D/archive"
models = "$ROOT/models"
state = "$D/state"
[ingest]
ready = "marker"
rescan_interval = "1s"
after = "delete"
[pipeline]
classify = false
[http]
listen = "127.0.0.1:19464"
TOML
t0=$(date +%s.%N)
for i in 1 2 3 4; do cp -r $G $D/seq/S2_Q$i; $S2 --config $D/c.toml process $D/seq/S2_Q$i --out $D/seq-out > /dev/null 2>&1; done
t1=$(date +%s.%N)
echo "sequential process x4: $(python3 -c "print(round($t1 - $t0, 1))") s"
for i in 1 2 3 4; do cp -r $G $D/ingest/S2_Q$i; touch $D/ingest/S2_Q$i.ready; done
t0=$(date +%s.%N)
$S2 --config $D/c.toml serve > $D/serve.log 2>&1 &
pid=$!
while [ "$(ls $D/out 2>/dev/null | grep -c S2_Q)" -lt 4 ]; do sleep 0.2; done
t1=$(date +%s.%N)
kill -TERM $pid; wait $pid || true
echo "daemon, 4 queued: $(python3 -c "print(round($t1 - $t0, 1))") s (start to 4th product)"
echo "opened ahead: $(grep -c 'opened ahead' $D/serve.log)"
grep -E "published|opened ahead" $D/serve.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-160 | head -12
