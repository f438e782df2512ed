#!/usr/bin/env bash
# Runs a command and samples its VmRSS / RssAnon / RssFile (MiB) every 0.5 s from /proc, so
# a peak can be placed in time against the command's log (BENCHMARKS.md "One CPU arena").
#
# Usage: scripts/rss_sample.sh OUT_PREFIX COMMAND [ARGS...]
#   writes OUT_PREFIX.log (the command's stdout and stderr) and OUT_PREFIX.rss (seconds since
#   start, VmRSS, RssAnon, RssFile); prints the exit status and the peak sample.
set -euo pipefail
out=$1
shift
start=$(date +%s.%N)
"$@" >"$out.log" 2>&1 &
pid=$!
: >"$out.rss"
while kill -0 "$pid" 2>/dev/null; do
    r=$(awk '/VmRSS/ {a=int($2/1024)} /RssAnon/ {b=int($2/1024)} /RssFile/ {c=int($2/1024)} END {print a, b, c}' \
        "/proc/$pid/status" 2>/dev/null || true)
    [[ -n "$r" ]] && echo "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}') $r" >>"$out.rss"
    sleep 0.5
done
rc=0
wait "$pid" || rc=$?
echo "rc=$rc peak(s, VmRSS, RssAnon, RssFile MiB)=$(sort -k2 -n "$out.rss" | tail -1)"
exit "$rc"
