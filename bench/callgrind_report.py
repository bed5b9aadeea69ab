#!/usr/bin/env python3
"""Reads a callgrind dump of the service (bench/callgrind-service.sh) and
prints instructions per request in the views an A/B of the request path
needs. With fat LTO most of a request is inlined into a few big functions, so
callgrind_annotate's function table says little; this follows inlined code
(`fi=`/`fe=` lines) to the source file it came from (build with
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only) and reads call edges.

Usage: callgrind_report.py DUMP REQUESTS VIEW [PATTERN] [TOP]
  VIEW  self           self cost by function
        crates         self cost by crate (inlined code where it came from)
        files          self cost by source file
        callees REGEX  inclusive cost of the calls made by functions matching REGEX
        callers REGEX  inclusive cost of the calls into functions matching REGEX,
                       by calling function, with calls per request
"""

import re
import sys
from collections import Counter

REF = re.compile(r"^(fl|fi|fe|fn|cfi|cfl|cfn|ob|cob)=(?:\((\d+)\))?\s*(.*)$")


def parse(path):
    """Yields (kind, caller fn, source file, callee fn or None, cost, calls)."""
    files, fns = {}, {}
    cur_fn = cur_fl = cur_file = callee = None
    pending = None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        m = REF.match(line)
        if m:
            kind, num, name = m.groups()
            if kind in ("fl", "fi", "fe", "cfi", "cfl"):
                if num is not None and name:
                    files[num] = name
                fname = files.get(num, name) if num is not None else name
                if kind == "fl":
                    cur_fl = cur_file = fname
                elif kind in ("fi", "fe"):
                    cur_file = fname
            elif kind in ("fn", "cfn"):
                if num is not None and name:
                    fns[num] = name
                fname = fns.get(num, name) if num is not None else name
                if kind == "fn":
                    cur_fn, cur_file = fname, cur_fl
                else:
                    callee = fname
            continue
        if line.startswith("calls="):
            pending = int(line.split("=", 1)[1].split()[0])
            continue
        if line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            if len(parts) < 2:
                continue
            cost = int(parts[1])
            if pending is not None:
                # The line after calls= is the call's inclusive cost.
                yield ("call", cur_fn, cur_file, callee, cost, pending)
                pending = None
            else:
                yield ("self", cur_fn, cur_file, None, cost, 0)


def crate(f):
    if f is None:
        return "?"
    m = re.search(r"/index\.crates\.io-[^/]+/([^/]+?)-\d+\.\d+[^/]*/", f)
    if m:
        return m.group(1)
    m = re.search(r"/library/([^/]+)/src/", f)
    if m:
        return "std:" + m.group(1)
    if "/out/stateservice.v1.rs" in f or re.search(r"(^|/)src/", f):
        return "state-service"
    if "sysdeps" in f or f.startswith("./"):
        return "libc: " + f.rsplit("/", 1)[-1]
    return f


def main():
    path, n, view = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    pattern = sys.argv[4] if view in ("callees", "callers") else None
    top = int(sys.argv[-1]) if len(sys.argv) > (5 if pattern else 4) else 40
    rx = re.compile(pattern) if pattern else None
    acc, calls = Counter(), Counter()
    total = 0
    for kind, fn, f, callee, cost, ncalls in parse(path):
        if kind == "self":
            total += cost
            if view == "self":
                acc[fn] += cost
            elif view == "crates":
                acc[crate(f)] += cost
            elif view == "files":
                acc[f] += cost
        elif view == "callees" and fn and rx.search(fn):
            acc[callee] += cost
            calls[callee] += ncalls
        elif view == "callers" and callee and rx.search(callee):
            acc[fn] += cost
            calls[fn] += ncalls
    print(f"total {total:,} instructions = {total / n:,.0f} per request")
    if view in ("callees", "callers"):
        print(f"{view} of /{pattern}/: {sum(acc.values()) / n:,.0f} per request")
    for k, c in acc.most_common(top):
        extra = f"  {calls[k] / n:6.2f} calls" if view in ("callees", "callers") else ""
        print(f"{c / n:10,.0f}  {100 * c / total:5.1f}%{extra}  {str(k)[:150]}")


if __name__ == "__main__":
    main()
