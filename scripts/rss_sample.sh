#!/usr/bin/env bash
# Runs a command and samples its VmRSS / RssAnon / RssFile (MiB) every 0.5 s from /proc, so
# a peak can be placed in time against the command's log (BENCHMARKS.md "One CPU arena").
#
# The sample is of the largest process in the command's tree, so a wrapper (`/usr/bin/time
# -v s2edge …`) is seen through to the process it runs.
#
# Usage: scripts/rss_sample.sh OUT_PREFIX COMMAND [ARGS...]
#   writes OUT_PREFIX.log (the command's stdout and stderr) and OUT_PREFIX.rss (seconds since
#   start, VmRSS, RssAnon, RssFile); prints the exit status and the peak sample.
#   SMAPS=1: also keep /proc/PID/smaps of the sample with the largest VmRSS so far in
#   OUT_PREFIX.smaps, to see which mappings the peak is made of (scripts/smaps_summary.py).
set -euo pipefail
out=$1
shift
start=$(date +%s.%N)
"$@" >"$out.log" 2>&1 &
pid=$!
: >"$out.rss"
best=0
tree() { echo "$1"; for c in $(pgrep -P "$1" 2>/dev/null); do tree "$c"; done; }
while kill -0 "$pid" 2>/dev/null; do
    # VmRSS, RssAnon, RssFile (MiB) and the pid of the largest process of the tree.
    r=$(for p in $(tree "$pid"); do
        awk -v p="$p" '/VmRSS/ {a=int($2/1024)} /RssAnon/ {b=int($2/1024)} /RssFile/ {c=int($2/1024)} END {print a, b, c, p}' \
            "/proc/$p/status" 2>/dev/null || true
    done | sort -n -k1 | tail -1)
    [[ -n "$r" ]] && echo "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}') ${r% *}" >>"$out.rss"
    if [[ -n "${SMAPS:-}" && -n "$r" ]]; then
        rss=${r%% *}
        if ((rss > best)); then
            cp "/proc/${r##* }/smaps" "$out.smaps.tmp" 2>/dev/null && mv "$out.smaps.tmp" "$out.smaps" && best=$rss
        fi
    fi
    sleep 0.5
done
rc=0
wait "$pid" || rc=$?
echo "rc=$rc peak(s, VmRSS, RssAnon, RssFile MiB)=$(sort -k2 -n "$out.rss" | tail -1)"
exit "$rc"
