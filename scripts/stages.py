#!/usr/bin/env python3
"""Where the time of a bench phase went, from each node's /metrics before
and after it: per node, the count and mean of each latency histogram that
moved. Usage: stages.py BEFORE_DIR AFTER_DIR (files node-N.prom in each).
Prints markdown table rows: | node | what | count | mean ms |."""
import os
import re
import sys

SERIES = re.compile(r'^(scs_[a-z_]+)_(sum|count)(\{kind="([a-z-]+)"\})? (\S+)$')


def read(path):
    out = {}
    try:
        text = open(path).read()
    except OSError:
        return out
    for line in text.splitlines():
        m = SERIES.match(line)
        if m:
            name, part, _, kind, value = m.groups()
            key = name + (f" {kind}" if kind else "")
            out.setdefault(key, {})[part] = float(value)
    return out


def main():
    before, after = sys.argv[1], sys.argv[2]
    for f in sorted(os.listdir(after)):
        node = f.split(".")[0]
        a, b = read(os.path.join(after, f)), read(os.path.join(before, f))
        for key in sorted(a):
            n = a[key].get("count", 0) - b.get(key, {}).get("count", 0)
            s = a[key].get("sum", 0) - b.get(key, {}).get("sum", 0)
            if n >= 1 and "count" in a[key] and "sum" in a[key]:
                what = key.replace("scs_", "").replace("_seconds", "")
                print(f"| {node} | {what} | {int(n)} | {1000 * s / n:.3f} |")


main()
