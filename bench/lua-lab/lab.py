#!/usr/bin/env python3
"""Lua lab (issue 16): Redis CPU per call of write-script variants.

Starts a private redis-server on a free loopback port (never 6379), loads the
Lua variants of bench/lua-lab/lua/ with SCRIPT LOAD (EVALSHA) and FUNCTION
LOAD (FCALL), prefills key spaces in each record format, and drives every
variant with the same pipelined stream of commands (`redis-cli --pipe`, fed
from a file this script writes: random keys, and a "now" that grows like the
service's clock estimate, which redis-benchmark cannot produce). Per variant
it reports:

* wall mode (plain redis-server): Redis's own time per call from
  `INFO commandstats` (usec / calls of EVALSHA, FCALL or the plain command;
  a script's figure includes the commands it runs), and the whole server's
  CPU per call (`INFO cpu`, parsing and replies included);
* instr mode (redis-server under `valgrind --tool=callgrind`, zeroed and
  dumped around each run with callgrind_control): instructions per call of
  the whole server, exact while other programs load the cores.

Every repetition runs all variants in the same order (A B C … A B C …);
medians and spread (min–max) over the repetitions go to results.json and
table.md in the output directory. Cross-checks with redis-benchmark -P 16
(the tool of bench/compare.sh) run in wall mode for SET, GET and today's PUT.

Usage: bench/lua-lab/run.sh (or lab.py --help). Dapr's versioned write is
run from the file named by --dapr (its exact `setQuery` text, which this
repository does not ship); a stand-in with the same commands always runs.
"""

import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time

LAB = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(LAB, "lua")

SMALL = 64
LARGE = 100_000
K_SMALL = 100_000
K_LARGE = 500
FAR_MS = 3_600_000  # TTL of the TTL variants: one hour, so nothing expires during a run
SHAS = {}  # script file -> sha, for generators that write EVALSHA themselves


# --- a minimal RESP client (control commands only) ---------------------------
class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += [b"$%d\r\n" % len(a), a, b"\r\n"]
        self.s.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"bad reply {line!r}")

    def info(self, section):
        text = self.cmd("INFO", section).decode()
        return dict(l.split(":", 1) for l in text.splitlines() if ":" in l and not l.startswith("#"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def resp(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out += [b"$%d\r\n" % len(a), a, b"\r\n"]
    return b"".join(out)


# --- records ----------------------------------------------------------------
def f2(ver, payload, exp=0):
    return b"\xff\x02%016d%014d" % (ver, exp) + payload


def fb(ver, payload, exp=0):
    return b"\xff\x04" + struct.pack(">QQ", ver, exp) + payload


def f3(ver, payload, entries, exp=0):
    meta = b"".join(b"\n%s %016d" % (rid, v) for rid, v in entries)
    return b"\xff\x03%016d%014d%04d" % (ver, exp, len(meta)) + meta + payload


def rid(n):
    # a UUID-sized request id
    return b"req-%032x" % n


class Clock:
    """The "now" the service would pass: µs, strictly growing across runs."""

    def __init__(self):
        self.last = 0

    def base(self, n):
        b = max(int(time.time() * 1e6), self.last + 1)
        self.last = b + n
        return b


# --- variants -----------------------------------------------------------------
class V:
    def __init__(self, name, group, size, call, gen, stat, keys_per_call=1,
                 prefix="s:", space=None, reset=None, n=None, note=""):
        self.name, self.group, self.size = name, group, size
        self.call = call  # ("eval", file) | ("fcall", fn) | ("cmd", NAME) | ("multi", file)
        self.gen = gen  # (rng, i, now, key) -> (keys, args); argv for cmd; [argv, …] for multi
        self.stat = (stat,) if isinstance(stat, str) else stat  # commandstats summed per op
        self.keys_per_call = keys_per_call
        self.prefix = prefix
        self.space = space
        self.reset = reset
        self.n = n or {}
        self.note = note

    @property
    def label(self):
        return f"{self.name} [{size_name(self.size)}]"


def size_name(size):
    return "64 B" if size == SMALL else "100 KB" if size == LARGE else f"{size // 1000} KB"


def payload(size):
    return b"p" * size


def build_variants(dapr_file):
    vs = []
    for size in (SMALL, LARGE):
        p = payload(size)
        S = "s:" if size == SMALL else "L:"
        T = "st:" if size == SMALL else "Lt:"
        D = "d:" if size == SMALL else "Ld:"
        M = "sm:" if size == SMALL else "Lm:"
        M1 = "sm1:" if size == SMALL else "Lm1:"
        big = size == LARGE

        def add(name, group, call, gen, stat, **kw):
            vs.append(V(name, group, size, call, gen, stat, **kw))

        # baselines
        add("SET", "baseline", ("cmd", "SET"), lambda r, i, now, k, p=p: [b"SET", k, f2(now, p)], "set", prefix=S)
        add("GET", "baseline", ("cmd", "GET"), lambda r, i, now, k: [b"GET", k], "get", prefix=S)
        add("EVALSHA empty", "baseline", ("eval", "empty.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p)]), "evalsha", prefix=S)
        add("EVALSHA GET+SET", "baseline", ("eval", "getset.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p)]), "evalsha", prefix=S)
        add("EVALSHA GETRANGE+SET", "baseline", ("eval", "getrangeset.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p)]), "evalsha", prefix=S)
        add("today PUT", "baseline", ("eval", "today_put.lua"), lambda r, i, now, k, p=p: ([k], [p, b"0"]), "evalsha", prefix=S)
        add("today APPLY, 1 put", "baseline", ("eval", "today_apply.lua"),
            lambda r, i, now, k, p=p: ([k], [b"each", b"P", p, b"0", b"0", b""]), "evalsha", prefix=S)
        for dname, dfile in (("Dapr setQuery", dapr_file), ("Dapr stand-in", os.path.join(LUA, "dapr_standin.lua"))):
            if dfile:
                add(dname, "baseline", ("eval", dfile), lambda r, i, now, k, p=p: ([k], [b"0", p, b"1"]), "evalsha", prefix=D)
        # levers, unary put
        add("PUT: GETRANGE", "lever", ("eval", "put_gr.lua"), lambda r, i, now, k, p=p: ([k], [p, b"0"]), "evalsha", prefix=S)
        add("PUT: no TIME", "lever", ("eval", "put_now.lua"),
            lambda r, i, now, k, p=p: ([k], [p, b"0", b"%d" % now, b"%d" % (now // 1000)]), "evalsha", prefix=S)
        add("PUT: GETRANGE + no TIME", "lever", ("eval", "put_gr_now.lua"),
            lambda r, i, now, k, p=p: ([k], [p, b"0", b"%d" % now, b"%d" % (now // 1000)]), "evalsha", prefix=S)
        add("lean, TIME, format", "lever", ("eval", "put_fmt_time.lua"), lambda r, i, now, k, p=p: ([k], [p, b"0"]), "evalsha", prefix=S)
        add("lean, now arg, format", "lever", ("eval", "put_fmt.lua"), lambda r, i, now, k, p=p: ([k], [p, b"%d" % now]), "evalsha", prefix=S)
        add("lean, one string.format", "lever", ("eval", "put_fmt1.lua"), lambda r, i, now, k, p=p: ([k], [p, b"%d" % now]), "evalsha", prefix=S)
        add("put_pre (record from service)", "lever", ("eval", "put_pre.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now]), "evalsha", prefix=S)
        add("put_best (put_pre + string args, string compare)", "lever", ("eval", "put_best.lua"),
            lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%016d" % now]), "evalsha", prefix=S)
        add("put_stage: SET stage + GETRANGE, RENAME, PERSIST", "lever", ("multi", "put_stage.lua"),
            lambda r, i, now, k, p=p: [[b"SET", b"~stage:" + k + b":%d" % now, f2(now, p), b"PX", b"60000"],
                                       [b"EVALSHA", SHAS["put_stage.lua"], b"2", k, b"~stage:" + k + b":%d" % now, b"%016d" % now, b""]],
            ("evalsha", "set"), prefix=S)
        add("put_pre, rare path every call", "lever", ("eval", "put_pre.lua"), lambda r, i, now, k, p=p: ([k], [f2(1, p), b"1"]), "evalsha", prefix=S)
        add("put_pre, SET … KEEPTTL GET", "lever", ("eval", "put_pre_setget.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now]), "evalsha", prefix=S)
        add("FCALL put_pre", "lever", ("fcall", "put_pre"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now]), "fcall", prefix=S)
        add("put_pre + floor GET", "addition", ("eval", "put_floor.lua"),
            lambda r, i, now, k, p=p: ([k, b"floor:{0}"], [f2(now, p), b"%d" % now, b"", b"1000000"]), "evalsha", prefix=S)
        add("put_meta, no id, no meta (absent)", "addition", ("eval", "put_meta.lua"),
            lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now, b"", b""]), "evalsha", prefix=S)
        add("put_meta, id, old has 8 ids", "addition", ("eval", "put_meta.lua"),
            lambda r, i, now, k, p=p: ([k], [f3(now, p, [(rid(now), now)]), b"%d" % now, rid(now), b""]), "evalsha", prefix=M)
        add("put_feed XADD (no value)", "addition", ("eval", "put_feed.lua"),
            lambda r, i, now, k, p=p: ([k, b"feed:{0}", b"exp:{0}"], [f2(now, p), b"%d" % now, b"", b"10000", b"", b""]), "evalsha", prefix=S)
        if big:
            continue
        # small-value only from here
        add("MSET ×100", "baseline", ("cmd", "MSET"),
            lambda r, i, now, k, p=p: [b"MSET"] + [x for j in range(100) for x in (b"s:%d" % r.randrange(K_SMALL), f2(now, p))],
            "mset", keys_per_call=100, prefix=S)
        add("DEL", "baseline", ("cmd", "DEL"), lambda r, i, now, k: [b"DEL", k], "del", prefix="dl:", reset="dl:")
        add("today PUT, TTL", "baseline", ("eval", "today_put.lua"), lambda r, i, now, k, p=p: ([k], [p, b"%d" % FAR_MS]), "evalsha", prefix=T)
        add("today APPLY, put ifExists", "baseline", ("eval", "today_apply.lua"),
            lambda r, i, now, k, p=p: ([k], [b"each", b"P", p, b"0", b"0", b"E"]), "evalsha", prefix=S)
        add("today APPLY, increment", "baseline", ("eval", "today_apply.lua"),
            lambda r, i, now, k: ([k], [b"each", b"I", b"1", b"0", b"0", b""]), "evalsha", prefix="i:")
        add("today APPLY, delete ifExists", "baseline", ("eval", "today_apply.lua"),
            lambda r, i, now, k: ([k], [b"each", b"D", b"", b"0", b"0", b"E"]), "evalsha", prefix="dl:", reset="dl:")
        add("today APPLY, 100 puts (BatchPut)", "baseline", ("eval", "today_apply.lua"),
            lambda r, i, now, k, p=p: ([b"s:%d" % r.randrange(K_SMALL) for _ in range(100)],
                                       [b"each"] + [x for _ in range(100) for x in (b"P", p, b"0", b"0", b"")]),
            "evalsha", keys_per_call=100, prefix=S)
        add("today APPLY atomic, 10 puts ifExists (Transact)", "baseline", ("eval", "today_apply.lua"),
            lambda r, i, now, k, p=p: ([b"s:%d" % r.randrange(K_SMALL) for _ in range(10)],
                                       [b"atomic"] + [x for _ in range(10) for x in (b"P", p, b"0", b"0", b"E")]),
            "evalsha", keys_per_call=10, prefix=S)
        add("put_pre, TTL (PXAT)", "lever", ("eval", "put_pre.lua"),
            lambda r, i, now, k, p=p: ([k], [f2(now, p, now // 1000 + FAR_MS), b"%d" % now, b"%d" % (now // 1000 + FAR_MS)]),
            "evalsha", prefix=T)
        add("put_pre, pcall", "lever", ("eval", "put_pre_pcall.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now]), "evalsha", prefix=S)
        add("put_pre, GETRANGE offsets as strings", "lever", ("eval", "put_pre_sargs.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now]), "evalsha", prefix=S)
        add("FCALL put_best", "lever", ("fcall", "put_best"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%016d" % now]), "fcall", prefix=S)
        add("put_pre, string compare", "lever", ("eval", "put_pre_strcmp.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%016d" % now]), "evalsha", prefix=S)
        add("put_pre, byte+tonumber check", "lever", ("eval", "put_pre_byte.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now]), "evalsha", prefix=S)
        add("put_pre, no header check (unsound)", "lever", ("eval", "put_pre_nocheck.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now]), "evalsha", prefix=S)
        add("put_pre_args, 3 ARGV", "lever", ("eval", "put_pre_args.lua"),
            lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now, b""]), "evalsha", prefix=S)
        add("put_pre_args, 3 + 5 unused ARGV", "lever", ("eval", "put_pre_args.lua"),
            lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now, b"", b"x", b"y", b"z", b"w", b"v"]), "evalsha", prefix=S)
        add("put_pre, string functions in locals", "lever", ("eval", "put_pre_up.lua"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now]), "evalsha", prefix=S)
        add("put_struct (binary header)", "lever", ("eval", "put_struct.lua"), lambda r, i, now, k, p=p: ([k], [fb(now, p), b"%d" % now]), "evalsha", prefix="sb:")
        add("FCALL empty", "lever", ("fcall", "empty"), lambda r, i, now, k, p=p: ([k], [f2(now, p)]), "fcall", prefix=S)
        add("FCALL GETRANGE+SET", "lever", ("fcall", "getrangeset"), lambda r, i, now, k, p=p: ([k], [f2(now, p)]), "fcall", prefix=S)
        add("FCALL today PUT", "lever", ("fcall", "today_put"), lambda r, i, now, k, p=p: ([k], [p, b"0"]), "fcall", prefix=S)
        add("FCALL put_pre, upvalues", "lever", ("fcall", "put_pre_up"), lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now]), "fcall", prefix=S)
        # design: conditional, increment, delete, batch, transact
        add("cond_pre, put ifExists", "design", ("eval", "cond_pre.lua"),
            lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now, b"E", b"", b""]), "evalsha", prefix=S)
        add("incr_pre", "design", ("eval", "incr_pre.lua"),
            lambda r, i, now, k: ([k], [b"\xff\x02%016d%014d" % (now, 0), b"%d" % now, b"1"]), "evalsha", prefix="i:")
        add("del_pre, ifExists", "design", ("eval", "del_pre.lua"), lambda r, i, now, k: ([k], [b"E", b""]), "evalsha", prefix="dl:", reset="dl:")
        batch_gen = lambda r, i, now, k, p=p: ([b"s:%d" % r.randrange(K_SMALL) for _ in range(100)],
                                                [b"%d" % now] + [f2(now, p)] * 100)
        add("batch_fn, 100 puts", "design", ("eval", "batch_fn.lua"), batch_gen, "evalsha", keys_per_call=100, prefix=S)
        add("batch_inline, 100 puts", "design", ("eval", "batch_inline.lua"), batch_gen, "evalsha", keys_per_call=100, prefix=S)
        add("batch_exc, 100 puts", "design", ("eval", "batch_exc.lua"), batch_gen, "evalsha", keys_per_call=100, prefix=S)
        add("batch_mset, 100 puts", "design", ("eval", "batch_mset.lua"), batch_gen, "evalsha", keys_per_call=100, prefix=S)
        add("batch_lean, 100 puts (MGET, string compare, MSET)", "design", ("eval", "batch_lean.lua"),
            lambda r, i, now, k, p=p: ([b"s:%d" % r.randrange(K_SMALL) for _ in range(100)],
                                       [b"%016d" % now] + [f2(now, p)] * 100), "evalsha", keys_per_call=100, prefix=S)
        add("FCALL batch_lean, 100 puts", "design", ("fcall", "batch_lean"),
            lambda r, i, now, k, p=p: ([b"s:%d" % r.randrange(K_SMALL) for _ in range(100)],
                                       [b"%016d" % now] + [f2(now, p)] * 100), "fcall", keys_per_call=100, prefix=S)
        add("batch_gr_mset, 100 puts (GETRANGE each, MSET)", "design", ("eval", "batch_gr_mset.lua"),
            lambda r, i, now, k, p=p: ([b"s:%d" % r.randrange(K_SMALL) for _ in range(100)],
                                       [b"%016d" % now] + [f2(now, p)] * 100), "evalsha", keys_per_call=100, prefix=S)
        add("batch floor: MSET only (unchecked)", "design", ("eval", "batch_floor_mset.lua"), batch_gen, "evalsha", keys_per_call=100, prefix=S)
        add("batch floor: MGET + MSET (unchecked)", "design", ("eval", "batch_floor_mget_mset.lua"), batch_gen, "evalsha", keys_per_call=100, prefix=S)
        add("FCALL batch_exc, 100 puts", "design", ("fcall", "batch_exc"), batch_gen, "fcall", keys_per_call=100, prefix=S)
        add("transact_pre, 10 puts ifExists", "design", ("eval", "transact_pre.lua"),
            lambda r, i, now, k, p=p: ([b"s:%d" % r.randrange(K_SMALL) for _ in range(10)],
                                       [b"%d" % now] + [x for _ in range(10) for x in (f2(now, p), b"E", b"")]),
            "evalsha", keys_per_call=10, prefix=S)
        # additions
        add("put_pre + floor GET + SET every write", "addition", ("eval", "put_floor.lua"),
            lambda r, i, now, k, p=p: ([k, b"floor:{0}"], [f2(now, p), b"%d" % now, b"", b"0"]), "evalsha", prefix=S)
        add("put_meta, id, old without ids", "addition", ("eval", "put_meta.lua"),
            lambda r, i, now, k, p=p: ([k], [f3(now, p, [(rid(now), now)]), b"%d" % now, rid(now), b""]), "evalsha",
            prefix=M1, reset=M1)
        add("put_meta, no id, old has 8 ids (carried)", "addition", ("eval", "put_meta.lua"),
            lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%d" % now, b"", b""]), "evalsha", prefix=M)
        add("put_feed XADD + ZSCORE", "addition", ("eval", "put_feed.lua"),
            lambda r, i, now, k, p=p: ([k, b"feed:{0}", b"exp:{0}"], [f2(now, p), b"%d" % now, b"", b"10000", b"", b"z"]), "evalsha", prefix=S)
        add("put_feed XADD with value", "addition", ("eval", "put_feed.lua"),
            lambda r, i, now, k, p=p: ([k, b"feed:{0}", b"exp:{0}"], [f2(now, p), b"%d" % now, b"", b"10000", b"v", b""]), "evalsha", prefix=S)
    # where staging (value kept out of Lua) starts to pay: mid sizes
    for size in CROSS:
        p = payload(size)
        X = f"x{size}:"
        vs.append(V("SET", "crossover", size, ("cmd", "SET"), lambda r, i, now, k, p=p: [b"SET", k, f2(now, p)], "set", prefix=X))
        vs.append(V("put_best", "crossover", size, ("eval", "put_best.lua"),
                    lambda r, i, now, k, p=p: ([k], [f2(now, p), b"%016d" % now]), "evalsha", prefix=X))
        vs.append(V("put_stage", "crossover", size, ("multi", "put_stage.lua"),
                    lambda r, i, now, k, p=p: [[b"SET", b"~stage:" + k + b":%d" % now, f2(now, p), b"PX", b"60000"],
                                               [b"EVALSHA", SHAS["put_stage.lua"], b"2", k, b"~stage:" + k + b":%d" % now, b"%016d" % now, b""]],
                    ("evalsha", "set"), prefix=X))
    return vs


CROSS = (1000, 4000, 16000)


# key spaces: prefix -> (number of keys, record maker(now))
def spaces():
    sp, lp = payload(SMALL), payload(LARGE)
    ids8 = lambda now: [(rid(now - j), now - j) for j in range(8)]
    return {
        "s:": (K_SMALL, lambda now: f2(now, sp)),
        "st:": (K_SMALL, lambda now: f2(now, sp)),
        "sb:": (K_SMALL, lambda now: fb(now, sp)),
        "sm:": (K_SMALL, lambda now: f3(now, sp, ids8(now))),
        "sm1:": (K_SMALL, lambda now: f2(now, sp)),
        "i:": (K_SMALL, lambda now: f2(now, b"12345")),
        "dl:": (K_SMALL, lambda now: f2(now, sp)),
        "d:": (K_SMALL, None),
        "L:": (K_LARGE, lambda now: f2(now, lp)),
        "Lt:": (K_LARGE, lambda now: f2(now, lp)),
        "Lm:": (K_LARGE, lambda now: f3(now, lp, ids8(now))),
        "Lm1:": (K_LARGE, lambda now: f2(now, lp)),
        "Ld:": (K_LARGE, None),
        **{f"x{n}:": (2000, (lambda now, n=n: f2(now, payload(n)))) for n in CROSS},
    }


FILL = """
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  if ARGV[5] == 'h' then
    redis.call('HSET', ARGV[1] .. i, 'data', ARGV[4], 'version', 1)
  else
    redis.call('SET', ARGV[1] .. i, ARGV[4])
  end
end
"""


def fill(c, clock, prefix):
    k, mk = spaces()[prefix]
    now = clock.base(1)
    if mk:
        v, kind = mk(now), b"s"
    else:
        v, kind = payload(SMALL if prefix == "d:" else LARGE), b"h"
    step = 5000 if len(v) < 10_000 else 100
    for a in range(0, k, step):
        c.cmd("EVAL", FILL, 0, prefix, a, min(k, a + step) - 1, v, kind)


def function_library(names):
    """One Redis Functions library with the bodies of the EVAL scripts."""
    out = ["#!lua name=lab\n"]
    for fn, fname in names:
        body = open(os.path.join(LUA, fname)).read()
        if fn.endswith("_up"):
            # Library-level locals (upvalues) set on the first call: Redis 7.0
            # hides `string` while a library loads.
            first, body = body.split("\n", 1)
            names, values = first[len("local "):].split(" = ")
            out.append(f"local {names}\n")
            body = f"if not {names.split(',')[0]} then {names} = {values} end\n" + body
        out.append(f"redis.register_function('{fn}', function(KEYS, ARGV)\n{body}\nend)\n")
    return "".join(out)


FUNCS = [("empty", "empty.lua"), ("getrangeset", "getrangeset.lua"), ("today_put", "today_put.lua"),
         ("put_pre", "put_pre.lua"), ("put_pre_up", "put_pre_up.lua"), ("put_best", "put_best.lua"),
         ("batch_exc", "batch_exc.lua"), ("batch_lean", "batch_lean.lua")]


# --- the server -----------------------------------------------------------------
class Server:
    def __init__(self, mode, out):
        self.mode, self.out = mode, out
        self.port = free_port()
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", out, "--logfile", os.path.join(out, "redis.log")]
        if mode == "instr":
            argv = ["valgrind", "--tool=callgrind", "--dump-instr=no",
                    f"--callgrind-out-file={out}/callgrind.%p.out"] + argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, "server.err"), "w"))
        deadline = time.time() + 60
        while True:
            try:
                self.c = Conn(self.port)
                self.c.cmd("PING")
                break
            except (OSError, RuntimeError):
                if time.time() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"redis-server did not start (see {out}/server.err)")
                time.sleep(0.2)
        self.dumps = 0

    def stop(self):
        try:
            self.c.cmd("SHUTDOWN", "NOSAVE")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def zero(self):
        subprocess.run(["callgrind_control", "-z", str(self.proc.pid)], check=True, stdout=subprocess.DEVNULL)

    def dump_ir(self):
        subprocess.run(["callgrind_control", "-d", str(self.proc.pid)], check=True, stdout=subprocess.DEVNULL)
        self.dumps += 1
        path = os.path.join(self.out, f"callgrind.{self.proc.pid}.out.{self.dumps}")
        for _ in range(100):
            if os.path.exists(path):
                break
            time.sleep(0.1)
        with open(path) as f:
            for line in f:
                if line.startswith("summary:"):
                    ir = int(line.split()[1])
                    break
        os.remove(path)
        return ir


def write_stream(path, v, n, rng, now0, shas):
    prefix = v.prefix.encode()
    K = spaces()[v.prefix][0]
    with open(path, "wb") as f:
        for i in range(n):
            now = now0 + i
            key = prefix + b"%d" % rng.randrange(K)
            g = v.gen(rng, i, now, key)
            kind, what = v.call
            if kind == "multi":
                for argv in g:
                    f.write(resp(argv))
                continue
            if kind == "cmd":
                argv = g
            else:
                keys, args = g
                head = [b"EVALSHA", shas[what]] if kind == "eval" else [b"FCALL", what.encode()]
                argv = head + [b"%d" % len(keys)] + keys + args
            f.write(resp(argv))


def pipe(port, path):
    with open(path, "rb") as f:
        r = subprocess.run(["redis-cli", "-p", str(port), "--pipe", "--pipe-timeout", "0"],
                           stdin=f, capture_output=True, text=True)
    m = re.search(r"errors: (\d+), replies: (\d+)", r.stdout)
    if r.returncode != 0 or not m or m.group(1) != "0":
        raise SystemExit(f"redis-cli --pipe failed: {r.stdout[-500:]} {r.stderr[-500:]}")
    return int(m.group(2))


def cpu(c):
    i = c.info("cpu")
    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])


def cmdstat(c, name):
    i = c.info("commandstats")
    s = i.get(f"cmdstat_{name}")
    if not s:
        return 0, 0
    d = dict(kv.split("=") for kv in s.split(","))
    return int(d["calls"]), int(d["usec"])


def run_variant(srv, v, n, rng, clock, shas, tmp):
    if v.reset:
        fill(srv.c, clock, v.reset)
    now0 = clock.base(n)
    path = os.path.join(tmp, "stream.resp")
    write_stream(path, v, n, rng, now0, shas)
    res = {}
    if srv.mode == "instr":
        srv.zero()
        pipe(srv.port, path)
        res["instr"] = srv.dump_ir() / n
    else:
        srv.c.cmd("CONFIG", "RESETSTAT")
        c0 = cpu(srv.c)
        t0 = time.time()
        pipe(srv.port, path)
        res["wall_s"] = time.time() - t0
        res["cpu_us"] = (cpu(srv.c) - c0) * 1e6 / n
        usec = 0
        for stat in v.stat:
            calls, u = cmdstat(srv.c, stat)
            if stat == v.stat[0] and calls != n:
                raise SystemExit(f"{v.label}: {calls} {stat} calls, expected {n}")
            usec += u
        res["usec"] = usec / n
        res["load"] = os.getloadavg()[0]
    return res


def redis_benchmark(srv, tests, n, rng):
    """compare.sh's own tool, for the baselines: -P 16, 50 clients, random keys."""
    out = {}
    c = srv.c
    put = c.cmd("SCRIPT", "LOAD", open(os.path.join(LUA, "today_put.lua")).read()).decode()
    cmds = {
        "SET (redis-benchmark -P 16)": ("set", ["-t", "set", "-d", str(SMALL)]),
        "GET (redis-benchmark -P 16)": ("get", ["-t", "get"]),
        "today PUT (redis-benchmark -P 16)": ("evalsha", ["EVALSHA", put, "1", "s:__rand_int__", "p" * SMALL, "0"]),
    }
    for name, (stat, args) in cmds.items():
        c.cmd("CONFIG", "RESETSTAT")
        c0 = cpu(c)
        subprocess.run(["redis-benchmark", "-p", str(srv.port), "-c", "50", "-P", "16", "-n", str(n),
                        "-r", str(K_SMALL), "-q"] + args, check=True, capture_output=True)
        calls, usec = cmdstat(c, stat)
        out[name] = {"usec": usec / calls, "cpu_us": (cpu(c) - c0) * 1e6 / calls}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(LAB, "..", "out", "lua-lab"))
    ap.add_argument("--reps", type=int, default=3, help="wall-mode repetitions (interleaved)")
    ap.add_argument("--instr-reps", type=int, default=2, help="callgrind repetitions (0: skip)")
    ap.add_argument("--n", type=int, default=50_000, help="calls per small unary run (wall)")
    ap.add_argument("--instr-n", type=int, default=4_000, help="calls per small unary run (callgrind)")
    ap.add_argument("--only", default="", help="regex: run only the variants whose label matches")
    ap.add_argument("--dapr", default=os.environ.get("DAPR_SET_LUA", ""),
                    help="file with Dapr's exact setQuery Lua text (optional)")
    ap.add_argument("--modes", default="wall,instr")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    if a.dapr and not os.path.exists(a.dapr):
        raise SystemExit(f"--dapr {a.dapr}: no such file")
    vs = build_variants(a.dapr or None)
    if a.only:
        vs = [v for v in vs if re.search(a.only, v.label)]

    def calls(v, mode):
        base = a.n if mode == "wall" else a.instr_n
        if v.keys_per_call > 1:
            return max(20, base // v.keys_per_call)
        if v.size == LARGE:
            return max(50, base // 50)
        if v.size in CROSS:
            return max(100, base * 1000 // v.size // 10)
        if v.reset == "dl:":
            return min(base, 20_000)
        return base

    results = {v.label: {"group": v.group, "size": v.size, "keys_per_call": v.keys_per_call,
                         "usec": [], "cpu_us": [], "instr": [], "load": [], "n": {}} for v in vs}
    bench = {}
    for mode in a.modes.split(","):
        reps = a.reps if mode == "wall" else a.instr_reps
        if reps <= 0:
            continue
        d = os.path.join(out, mode)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        srv = Server(mode, d)
        try:
            clock = Clock()
            shas = {}
            for v in vs:
                if v.call[0] in ("eval", "multi") and v.call[1] not in shas:
                    f = v.call[1] if os.path.isabs(v.call[1]) else os.path.join(LUA, v.call[1])
                    shas[v.call[1]] = srv.c.cmd("SCRIPT", "LOAD", open(f).read())
            SHAS.update(shas)
            srv.c.cmd("FUNCTION", "LOAD", "REPLACE", function_library(FUNCS))
            needed = {v.prefix for v in vs}
            print(f"[{mode}] prefilling {sorted(needed)}", file=sys.stderr)
            for p in sorted(needed):
                fill(srv.c, clock, p)
            rng = random.Random(16)
            for rep in range(reps):
                for v in vs:
                    n = calls(v, mode)
                    r = run_variant(srv, v, n, rng, clock, shas, d)
                    res = results[v.label]
                    res["n"][mode] = n
                    for key, val in r.items():
                        if key in res:
                            res[key].append(val)
                    print(f"[{mode} {rep + 1}/{reps}] {v.label}: " +
                          ", ".join(f"{k}={val:.2f}" for k, val in r.items()), file=sys.stderr)
            if mode == "wall" and not a.only:
                for rep in range(reps):
                    for name, r in redis_benchmark(srv, None, 300_000, rng).items():
                        bench.setdefault(name, {"usec": [], "cpu_us": []})
                        for key in ("usec", "cpu_us"):
                            bench[name][key].append(r[key])
        finally:
            srv.stop()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "redis": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
        "nproc": os.cpu_count(),
        "args": vars(a),
    }
    json.dump({"meta": meta, "results": results, "redis_benchmark": bench}, open(os.path.join(out, "results.json"), "w"), indent=1)
    open(os.path.join(out, "table.md"), "w").write(table(results, bench, meta))
    print(table(results, bench, meta))


def med(xs):
    return statistics.median(xs) if xs else None


def table(results, bench, meta):
    def ref(label):
        r = results.get(label)
        return (med(r["usec"]), med(r["instr"])) if r else (None, None)

    dapr = ref("Dapr setQuery [64 B]")
    if dapr[0] is None:
        dapr = ref("Dapr stand-in [64 B]")
    dapr_l = ref("Dapr setQuery [100 KB]")
    if dapr_l[0] is None:
        dapr_l = ref("Dapr stand-in [100 KB]")
    set_s, set_l = ref("SET [64 B]"), ref("SET [100 KB]")
    lines = [f"Redis {meta['redis'].split()[2]}, {meta['date']}, {meta['nproc']} CPUs. "
             "µs = Redis time per call from INFO commandstats (median, min–max over the wall repetitions); "
             "CPU µs = whole redis-server CPU per call (INFO cpu); instr = instructions per call of the whole "
             "server under callgrind (median, min–max). Per key: divided by keys per call. "
             "×Dapr and ×SET: ratio of medians, per call (batches: per key), same value size.\n",
             "| variant | keys/call | µs/call | spread | CPU µs/call | instr/call | spread | µs/key | instr/key | ×Dapr µs | ×Dapr instr | ×SET µs | ×SET instr |",
             "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]

    def f(x, d=2):
        return "" if x is None else f"{x:,.{d}f}"

    for label, r in results.items():
        u, i, c = med(r["usec"]), med(r["instr"]), med(r["cpu_us"])
        kpc = r["keys_per_call"]
        us = f"{min(r['usec']):.2f}–{max(r['usec']):.2f}" if r["usec"] else ""
        isp = f"{min(r['instr']):,.0f}–{max(r['instr']):,.0f}" if r["instr"] else ""
        uk = u / kpc if u is not None else None
        ik = i / kpc if i is not None else None
        d = dapr if r["size"] == SMALL else dapr_l if r["size"] == LARGE else (None, None)
        s = set_s if r["size"] == SMALL else set_l if r["size"] == LARGE else ref(f"SET [{size_name(r['size'])}]")
        rd = lambda x, y: f"{x / y:.2f}" if x is not None and y else ""
        lines.append(f"| {label} | {kpc} | {f(u)} | {us} | {f(c)} | {f(i, 0)} | {isp} | {f(uk)} | {f(ik, 0)} | "
                     f"{rd(uk, d[0])} | {rd(ik, d[1])} | {rd(uk, s[0])} | {rd(ik, s[1])} |")
    if bench:
        lines += ["", "redis-benchmark -c 50 -P 16 (the tool of bench/compare.sh), same server, wall mode:", "",
                  "| command | µs/call | spread | CPU µs/call |", "|---|---:|---|---:|"]
        for name, r in bench.items():
            lines.append(f"| {name} | {med(r['usec']):.2f} | {min(r['usec']):.2f}–{max(r['usec']):.2f} | {med(r['cpu_us']):.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
