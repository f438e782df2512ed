#!/usr/bin/env python3
"""Summarises a /proc/PID/smaps snapshot (scripts/rss_sample.sh with SMAPS=1): resident
MiB by kind of mapping, and the largest anonymous mappings with their sizes, so a peak
can be split into ONNX Runtime's arena regions (power-of-two sizes), the pipeline's own
buffers, the heap and the libraries.

Usage: smaps_summary.py FILE.smaps [TOP]
"""

import re
import sys
from collections import defaultdict

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$")


def mappings(path):
    cur = None
    with open(path) as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                if cur:
                    yield cur
                lo, hi = int(m[1], 16), int(m[2], 16)
                cur = {"size": hi - lo, "perms": m[3], "name": m[5].strip(), "rss": 0}
            elif cur and line.startswith("Rss:"):
                cur["rss"] = int(line.split()[1]) * 1024
    if cur:
        yield cur


def kind(m):
    name = m["name"]
    if name == "[heap]":
        return "heap"
    if name.startswith("[stack"):
        return "stack"
    if name.startswith("/"):
        return "file: " + name.rsplit("/", 1)[-1]
    if name:
        return name
    return "anonymous"


def main() -> int:
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    maps = list(mappings(path))
    mib = 1 << 20
    by = defaultdict(int)
    for m in maps:
        by[kind(m)] += m["rss"]
    total = sum(m["rss"] for m in maps)
    print(f"resident: {total / mib:.0f} MiB in {len(maps)} mappings")
    for k, v in sorted(by.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {v / mib:8.1f} MiB  {k}")
    anon = sorted((m for m in maps if kind(m) == "anonymous"), key=lambda m: -m["rss"])
    print("largest anonymous mappings (size, resident MiB):")
    for m in anon[:top]:
        print(f"  {m['size'] / mib:9.2f} {m['rss'] / mib:9.2f}  {m['perms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
