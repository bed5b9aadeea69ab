#!/usr/bin/env python3
"""Turns the raw results of bench/compare.sh into docs/benchmarks.md and
docs/benchmarks.svg.

Usage: report.py OUT_DIR DOCS_DIR

Only the standard library: the chart is a hand-written SVG so that the report
needs nothing installed. Medians over the repetitions everywhere; nothing here
measures, it only divides. The hand-written analysis in bench/limits.md is
copied under "What limits it" so that re-running the script keeps it.
"""

import csv
import glob
import json
import os
import re
import statistics
import sys
from html import escape

OUT, DOCS = sys.argv[1], sys.argv[2]
RAW = os.path.join(OUT, "raw")
HERE = os.path.dirname(os.path.abspath(__file__))

# Targets of issue 5, as ratios to direct redis-benchmark.
TARGET_UNARY = 0.5
TARGET_BATCH = 0.8
TARGET_P99_MS = 2.0
TARGET_RSS_MIB = 64
# Targets of issue 16 (round 2).
TARGET_PUT_VS_PROXY_SET = 1.0
TARGET_PUT_REDIS_VS_DAPR = 0.5
TARGET_BATCHPUT_VS_SET_P = 0.5
TARGET_SVC_CPU_US = 14.0
# What issue 16 recorded for the reads before round 2 (service / twemproxy),
# shown for reference; "no slower" is judged only against a before binary
# measured in the same run (BENCH_BEFORE_BIN).
ROUND1_GET_VS_PROXY = "1.14×"
ROUND1_BATCHGET_VS_PROXY_P = "1.7–2.3×"


def read_kv(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            if v:
                out[k.strip()] = v.strip()
    return out


MACHINE = read_kv(os.path.join(OUT, "machine.txt"))
CLK_TCK = float(MACHINE.get("clk_tck", "100"))
COMMAND = open(os.path.join(OUT, "command.txt")).read().strip()
KNOBS = dict(re.findall(r"(BENCH_[A-Z_]+)=(\S+)", COMMAND))
DAPR = MACHINE.get("dapr_label", "Dapr")


def reps(pattern):
    """Sorted raw files of every repetition of one measurement."""
    return sorted(glob.glob(os.path.join(RAW, pattern)))


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def snapshot(path):
    svc, redis, proxy, rss, hwm = open(path).read().split()
    return {
        "svc": int(svc) / CLK_TCK,
        "redis": int(redis) / CLK_TCK,
        "proxy": int(proxy) / CLK_TCK,
        "rss_kb": int(rss),
        "hwm_kb": int(hwm),
    }


def cmdstats(path):
    """{command: (calls, usec)}, summed over every Redis of the file (a
    cluster's masters are concatenated)."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line.strip())
        if m:
            c, u = out.get(m.group(1), (0, 0))
            out[m.group(1)] = (c + int(m.group(2)), u + int(m.group(3)))
    return out


def cmd_delta(base):
    c0, c1 = cmdstats(base + ".cmdstats.before"), cmdstats(base + ".cmdstats.after")
    delta = {
        k: (v[0] - c0.get(k, (0, 0))[0], v[1] - c0.get(k, (0, 0))[1]) for k, v in c1.items()
    }
    # INFO is our own probe; CONFIG GET and SCRIPT LOAD are redis-benchmark's
    # and our set-up, not the workload's.
    for k in ("info", "config|get", "script|load", "cluster|nodes", "cluster|slots"):
        delta.pop(k, None)
    return {k: v for k, v in delta.items() if v[0] > 0}


# Commands a client sends itself; commandstats also counts the commands a
# script runs, and a script's usec already includes theirs.
TOP = ("exec", "evalsha", "eval", "fcall", "mget", "mset", "ping", "unwatch", "scan")
PLAIN = ("get", "set", "del", "time", "getrange")


def scripted(delta):
    return any(delta.get(k, (0, 0))[0] for k in ("evalsha", "eval", "fcall"))


def round_trips(delta):
    """Commands the service sent, as opposed to commands a script ran.

    commandstats counts a GET inside a Lua script like a GET from a client, so
    plain GET/SET/DEL/TIME count as round trips only in runs without scripts
    (every benchmark run is one RPC kind, so a run either uses scripts or not).
    MULTI…EXEC counts once, as EXEC.
    """
    n = sum(delta.get(k, (0, 0))[0] for k in TOP)
    if not scripted(delta):
        n += sum(delta.get(k, (0, 0))[0] for k in PLAIN)
    return n


def top_usec(delta):
    """Redis time (commandstats usec) of the commands the client sent: what
    the issue calls "Redis CPU per Put" (the script plus what it calls)."""
    n = sum(delta.get(k, (0, 0))[1] for k in TOP)
    if not scripted(delta):
        n += sum(v[1] for k, v in delta.items() if k not in TOP)
    return n


def service_run(base):
    """Everything measured around one state-loadgen run."""
    r = json.load(open(base + ".json"))
    before, after = snapshot(base + ".before"), snapshot(base + ".after")
    delta = cmd_delta(base)
    # Server-side counters cover the warm-up too, so divide by every request.
    rpcs = r["requests"] + r.get("warmup_requests", 0)
    per = lambda n: n / rpcs if rpcs else None  # noqa: E731
    return {
        "json": r,
        "rpcs": rpcs,
        # Throughput of the run's one op: ops/s for unary RPCs, keys/s for
        # batches and List pages.
        "ops_per_s": r["ops_per_s"],
        "keys_per_s": r["keys_per_s"],
        "keys_per_rpc": r["keys_per_s"] / r["ops_per_s"] if r["ops_per_s"] else None,
        "cmds_per_rpc": per(sum(v[0] for v in delta.values())),
        "round_trips_per_rpc": per(round_trips(delta)),
        "ping_unwatch_per_rpc": per(
            delta.get("ping", (0, 0))[0] + delta.get("unwatch", (0, 0))[0]
        ),
        "breakdown": {
            k: per(v[0]) for k, v in sorted(delta.items(), key=lambda kv: -kv[1][0])
        },
        "svc_cpu_us": per(after["svc"] - before["svc"]) * 1e6,
        "redis_cpu_us": per(after["redis"] - before["redis"]) * 1e6,
        "redis_cmd_us": per(top_usec(delta)),
        "client_cpu_us": r["client_cpu_s"] / r["requests"] * 1e6 if r["requests"] else None,
        "rss_kb": after["rss_kb"],
        "hwm_kb": after["hwm_kb"],
    }


def service(prefix, op):
    return [service_run(p[: -len(".json")]) for p in reps(f"{prefix}-{op}-[0-9]*.json")]


def rb_run(path):
    """One redis-benchmark run: {test: (rps, p50, p99)} and its costs per
    command (all tests of the run together)."""
    base = path[: -len(".csv")]
    tests = {}
    with open(path) as f:
        # With --cluster, redis-benchmark prints the cluster's layout first.
        lines = f.read().splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith('"test"')), len(lines))
        for row in csv.DictReader(lines[start:]):
            tests[row["test"]] = (
                float(row["rps"]),
                float(row["p50_latency_ms"]),
                float(row["p99_latency_ms"]),
            )
    requests = int(open(base + ".requests").read()) if os.path.exists(base + ".requests") else 0
    n = requests * max(1, len(tests))
    b, a = snapshot(base + ".before"), snapshot(base + ".after")
    delta = cmd_delta(base)
    user, system = (float(x) for x in open(base + ".time").read().split()[:2])
    return {
        "tests": tests,
        "commands": n,
        "redis_cpu_us": (a["redis"] - b["redis"]) / n * 1e6 if n else None,
        "proxy_cpu_us": (a["proxy"] - b["proxy"]) / n * 1e6 if n else None,
        "redis_cmd_us": top_usec(delta) / n if n and delta else None,
        "client_cpu_us": (user + system) / n * 1e6 if n else None,
    }


def rb(name):
    return [rb_run(p) for p in reps(f"{name}-[0-9]*.csv")]


def rb_rps(runs, test=None):
    """Median rps of `test` (None: the run's only test, e.g. a command)."""

    def pick(r):
        if test is None:
            return next(iter(r["tests"].values()), (None,))[0]
        return r["tests"].get(test, (None,))[0]

    return median([pick(r) for r in runs])


def med(runs, f):
    return median([f(r) for r in runs])


OPS = ("put", "get", "list", "listvalues", "batchput", "batchget")
svc = {op: service("service", op) for op in OPS}
before = {op: service("before", op) for op in OPS}
cluster = {op: service("cluster", op) for op in ("put", "get", "batchput", "batchget")}
half = {op: service("service", f"{op}-half") for op in ("get", "put")}
pinned = {op: service("service", f"{op}-pinned") for op in ("get", "put")}
final = snapshot(os.path.join(OUT, "final.snapshot"))

direct_u, proxy_u = rb("direct-unary"), rb("proxy-unary")
direct_p, proxy_p = rb("direct-pipelined"), rb("proxy-pipelined")
dapr_u, dapr_p = rb("dapr-unary"), rb("dapr-pipelined")
scan = rb("direct-scan")
cluster_u, cluster_p = rb("cluster-unary"), rb("cluster-pipelined")
SCAN_KEYS = float(MACHINE.get("scan_keys_per_call", "0") or 0)

P = MACHINE  # short alias for the text below
pipeline = KNOBS["BENCH_PIPELINE"]
batch = KNOBS["BENCH_BATCH"]
names = {
    "get": "Get",
    "put": "Put",
    "list": f"List×{batch}",
    "listvalues": f"List×{batch} with values",
    "batchget": f"BatchGet×{batch}",
    "batchput": f"BatchPut×{batch}",
}


def thr(runs, op):
    """The throughput figure of a service op: ops/s (unary) or keys/s."""
    key = "ops_per_s" if op in ("get", "put") else "keys_per_s"
    return med(runs, lambda r: r[key])


def ratio(a, b):
    return a / b if a is not None and b else None


def fnum(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def fratio(x):
    return "–" if x is None else f"{x:.2f}×"


def met(ok):
    return "**met**" if ok else "**missed**"


scan_keys = (lambda rps: rps * SCAN_KEYS if rps is not None and SCAN_KEYS else None)(
    rb_rps(scan)
)
# (label, redis label, service label, direct, proxy, service, unit, chart target
# as a ratio to direct or None)
rows = [
    (
        "single GET vs Get",
        "GET",
        "Get",
        rb_rps(direct_u, "GET"),
        rb_rps(proxy_u, "GET"),
        thr(svc["get"], "get"),
        "ops/s",
        TARGET_UNARY,
    ),
    (
        "single SET vs Put",
        "SET",
        "Put",
        rb_rps(direct_u, "SET"),
        rb_rps(proxy_u, "SET"),
        thr(svc["put"], "put"),
        "ops/s",
        # Round 2: Put ≥ 1.0× SET through twemproxy.
        ratio(rb_rps(proxy_u, "SET"), rb_rps(direct_u, "SET")),
    ),
    (
        f"GET -P {pipeline} vs BatchGet of {batch}",
        f"GET -P {pipeline}",
        f"BatchGet×{batch}",
        rb_rps(direct_p, "GET"),
        rb_rps(proxy_p, "GET"),
        thr(svc["batchget"], "batchget"),
        "keys/s",
        TARGET_BATCH,
    ),
    (
        f"SET -P {pipeline} vs BatchPut of {batch}",
        f"SET -P {pipeline}",
        f"BatchPut×{batch}",
        rb_rps(direct_p, "SET"),
        rb_rps(proxy_p, "SET"),
        thr(svc["batchput"], "batchput"),
        "keys/s",
        TARGET_BATCHPUT_VS_SET_P,
    ),
    (
        f"SCAN COUNT {batch} vs List of {batch}",
        f"SCAN COUNT {batch}",
        f"List×{batch}",
        scan_keys,
        None,
        thr(svc["list"], "list"),
        "keys/s",
        None,
    ),
    (
        f"SCAN COUNT {batch} vs List of {batch} with values",
        f"SCAN COUNT {batch}",
        f"List×{batch} + values",
        scan_keys,
        None,
        thr(svc["listvalues"], "listvalues"),
        "keys/s",
        None,
    ),
]
rows = [r for r in rows if r[5] is not None or r[3] is not None]

# --- markdown --------------------------------------------------------------
md = []
md.append("# Benchmarks\n")
md.append(
    "state-service against Redis itself and against what users would pick instead, on "
    "one machine in one run: `redis-benchmark` straight to Redis, `redis-benchmark` "
    f"through twemproxy (nutcracker), {DAPR}'s versioned write run with "
    "`redis-benchmark … EVALSHA` on the same Redis, and `state-loadgen` against the "
    "service (release build) in front of it. "
    f"Same concurrency ({KNOBS['BENCH_CONCURRENCY']}), "
    f"key space ({KNOBS['BENCH_KEYS']} keys) and value size "
    f"({KNOBS['BENCH_VALUE_SIZE']} B) for all; every "
    f"figure is the median of {KNOBS['BENCH_REPS']} "
    "repetitions, interleaved. Generated by `bench/compare.sh`; do not edit by hand "
    "(the analysis comes from `bench/limits.md`).\n"
)
md.append("![Throughput relative to direct Redis](benchmarks.svg)\n")
md.append("## Throughput\n")
md.append(
    "| workload | direct Redis | twemproxy | state-service | service / twemproxy | "
    "service / direct |"
)
md.append("|---|---:|---:|---:|---:|---:|")
for label, _, _, d, p, s, unit, _ in rows:
    md.append(
        f"| {label} ({unit}) | {fnum(d)} | {fnum(p) if p is not None else 'n/a'} | {fnum(s)} | "
        f"{fratio(ratio(s, p))} | {fratio(ratio(s, d))} |"
    )
md.append("")
md.append(
    f"*SCAN COUNT {batch}* is `redis-benchmark … SCAN 0 MATCH key:* COUNT {batch}` on the "
    f"same Redis (twemproxy does not support SCAN), counted at {SCAN_KEYS:g} keys per call "
    "(cursor 0 scans the same buckets every time; measured once with redis-cli). List pages "
    f"through the service's {KNOBS['BENCH_KEYS']} keys with the page tokens it returns, "
    f"{batch} keys per page; SCAN examines the same table, which also holds "
    "redis-benchmark's and the Dapr rows' keys.\n"
)

# Against Dapr.
dapr_rows = []
if dapr_u or dapr_p:
    md.append(f"## Against Dapr's versioned write ({DAPR})\n")
    md.append(
        f"Source: {MACHINE.get('dapr_source', '?')}. Called as Dapr's Redis state store calls "
        "it for a last-write Set (`EVALSHA <sha> 1 dapr:key:<n> 0 <value> 1`: HGET version, "
        "HGET first-write, HSET data, HINCRBY version) by `redis-benchmark`, single and "
        f"`-P {pipeline}`, on keys prefilled as Dapr's hashes. *Redis time* is `INFO "
        "commandstats` usec of the commands the client sent (a script's time includes the "
        "commands it runs) per call; *Redis CPU* is the whole redis-server's CPU "
        "(`/proc/<pid>/stat`) per call, parsing and replies included, which also depends on "
        "how many calls share a read (redis-benchmark sends one per client at a time; the "
        "service multiplexes its requests over 2 pooled connections).\n"
    )
    md.append(
        "| write | calls/s (keys/s) | Redis time µs / call | Redis CPU µs / call | "
        "service CPU µs / call |"
    )
    md.append("|---|---:|---:|---:|---:|")
    md.append(
        f"| {DAPR}, single | {fnum(rb_rps(dapr_u))} | {fnum(med(dapr_u, lambda r: r['redis_cmd_us']), 2)} "
        f"| {fnum(med(dapr_u, lambda r: r['redis_cpu_us']), 2)} | n/a |"
    )
    md.append(
        f"| {DAPR}, -P {pipeline} | {fnum(rb_rps(dapr_p))} | {fnum(med(dapr_p, lambda r: r['redis_cmd_us']), 2)} "
        f"| {fnum(med(dapr_p, lambda r: r['redis_cpu_us']), 2)} | n/a |"
    )
    for op in ("put", "batchput"):
        runs = svc[op]
        if not runs:
            continue
        k = med(runs, lambda r: r["keys_per_rpc"]) or 1
        md.append(
            f"| state-service {names[op]}{' (per key)' if op == 'batchput' else ''} "
            f"| {fnum(thr(runs, op))} | {fnum(med(runs, lambda r: r['redis_cmd_us']) / k if med(runs, lambda r: r['redis_cmd_us']) is not None else None, 2)} "
            f"| {fnum(med(runs, lambda r: r['redis_cpu_us']) / k, 2)} "
            f"| {fnum(med(runs, lambda r: r['svc_cpu_us']) / k, 2)} |"
        )
    md.append("")

# Cost per RPC.
md.append("## Cost per request of the service\n")
md.append(
    "Redis counters are `INFO commandstats` deltas around each run divided by every RPC "
    "of the run (warm-up included); commands run inside a Lua script are counted by "
    "Redis too, so *commands/RPC* is the work Redis does, and *round trips / RPC* counts "
    "the commands the service itself sent (GET, MGET, SCAN, EVALSHA, EXEC, PING, UNWATCH; "
    "a command run inside a script is not a round trip). *Redis time* is the commandstats "
    "usec of those commands (a script's includes what it runs). The health check PINGs "
    "each pooled connection once a second, which is included. CPU per RPC comes from "
    "`/proc/<pid>/stat` (service, Redis) and `getrusage` (`state-loadgen`, which shares "
    "the cores with the service and Redis).\n"
)
md.append(
    "| RPC | keys / RPC | commands / RPC | round trips / RPC | PING+UNWATCH / RPC "
    "| service CPU µs / RPC | Redis CPU µs / RPC | Redis time µs / RPC | loadgen CPU µs / RPC "
    "| p50 ms | p99 ms | commands per RPC (top) |"
)
md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def cost_rows(table):
    for op, runs in table.items():
        if not runs:
            continue
        # The breakdown of the median run by commands/RPC.
        mid = sorted(runs, key=lambda r: r["cmds_per_rpc"] or 0)[len(runs) // 2]
        top = ", ".join(
            f"{k} {v:.2f}" for k, v in list(mid["breakdown"].items())[:6] if v >= 0.005
        )
        md.append(
            f"| {names[op]} | {fnum(med(runs, lambda r: r['keys_per_rpc']), 1)} "
            f"| {fnum(med(runs, lambda r: r['cmds_per_rpc']), 2)} "
            f"| {fnum(med(runs, lambda r: r['round_trips_per_rpc']), 3)} "
            f"| {fnum(med(runs, lambda r: r['ping_unwatch_per_rpc']), 5)} "
            f"| {fnum(med(runs, lambda r: r['svc_cpu_us']), 1)} "
            f"| {fnum(med(runs, lambda r: r['redis_cpu_us']), 1)} "
            f"| {fnum(med(runs, lambda r: r['redis_cmd_us']), 1)} "
            f"| {fnum(med(runs, lambda r: r['client_cpu_us']), 1)} "
            f"| {fnum(med(runs, lambda r: r['json']['latency_us']['p50'] / 1000), 2)} "
            f"| {fnum(med(runs, lambda r: r['json']['latency_us']['p99'] / 1000), 2)} "
            f"| {top} |"
        )


cost_rows(svc)
md.append("")

md.append(
    "For comparison, per command under redis-benchmark (SET and GET together): Redis CPU "
    f"{fnum(med(direct_u, lambda r: r['redis_cpu_us']), 1)} µs single and "
    f"{fnum(med(direct_p, lambda r: r['redis_cpu_us']), 2)} µs pipelined straight to Redis, "
    f"{fnum(med(proxy_u, lambda r: r['redis_cpu_us']), 1)} µs single through twemproxy "
    f"(twemproxy itself {fnum(med(proxy_u, lambda r: r['proxy_cpu_us']), 1)} µs); "
    "the redis-benchmark client itself "
    f"{fnum(med(direct_u, lambda r: r['client_cpu_us']), 1)} µs single and "
    f"{fnum(med(direct_p, lambda r: r['client_cpu_us']), 2)} µs pipelined.\n"
)

# Before/after in the same run.
if any(before.values()):
    md.append("## Before and after (same run)\n")
    md.append(
        f"The service built from this tree against `{P.get('before')}` (the *before* "
        "binary), both on the same Redis (the before binary on its own key prefix), their "
        "runs interleaved in every repetition. Throughput is ops/s for Get/Put and keys/s "
        "otherwise.\n"
    )
    md.append(
        "| RPC | before | after | after / before | service CPU µs before → after "
        "| Redis CPU µs before → after | Redis time µs before → after |"
    )
    md.append("|---|---:|---:|---:|---|---|---|")
    for op in OPS:
        b, a = before[op], svc[op]
        if not b or not a:
            continue
        pair = lambda f, d=1: f"{fnum(med(b, f), d)} → {fnum(med(a, f), d)}"  # noqa: E731
        md.append(
            f"| {names[op]} | {fnum(thr(b, op))} | {fnum(thr(a, op))} "
            f"| {fratio(ratio(thr(a, op), thr(b, op)))} "
            f"| {pair(lambda r: r['svc_cpu_us'])} | {pair(lambda r: r['redis_cpu_us'])} "
            f"| {pair(lambda r: r['redis_cmd_us'])} |"
        )
    md.append("")

# Cluster.
if any(cluster.values()):
    md.append("## Redis Cluster (3 masters)\n")
    md.append(
        "The service with `--redis-mode cluster` over a 3-master cluster (no replicas) "
        "against `redis-benchmark --cluster` on the same cluster; Redis CPU and time are "
        "summed over the three masters.\n"
    )
    md.append(
        "| workload | redis-benchmark --cluster | state-service | service / redis-benchmark "
        "| service CPU µs / RPC | Redis CPU µs / RPC | Redis CPU µs / command (redis-benchmark) |"
    )
    md.append("|---|---:|---:|---:|---:|---:|---:|")
    for op, test, rbruns, label in (
        ("get", "GET", cluster_u, "single GET vs Get (ops/s)"),
        ("put", "SET", cluster_u, "single SET vs Put (ops/s)"),
        ("batchget", "GET", cluster_p, f"GET -P {pipeline} vs BatchGet of {batch} (keys/s)"),
        ("batchput", "SET", cluster_p, f"SET -P {pipeline} vs BatchPut of {batch} (keys/s)"),
    ):
        runs = cluster[op]
        d = rb_rps(rbruns, test)
        s = thr(runs, op)
        md.append(
            f"| {label} | {fnum(d)} | {fnum(s)} | {fratio(ratio(s, d))} "
            f"| {fnum(med(runs, lambda r: r['svc_cpu_us']), 1)} "
            f"| {fnum(med(runs, lambda r: r['redis_cpu_us']), 1)} "
            f"| {fnum(med(rbruns, lambda r: r['redis_cpu_us']), 2)} |"
        )
    md.append("")

if any(half.values()):
    md.append("## Latency at half of the maximum rate (fixed-rate mode)\n")
    md.append(
        "`state-loadgen --rate R` with R half of the median closed-loop rate above, same "
        "concurrency cap. Latency is measured from the moment a request is sent; *from "
        "schedule* also counts any wait for a free in-flight slot. Sends are spread evenly "
        "(a pacing thread releases them every 100 µs), so nothing arrives in bursts. *Held*: at least 99 % of the rate "
        "completed and the p99 send lag stayed under 5 ms.\n"
    )
    md.append(
        "*CPU µs / RPC* is service + Redis + loadgen at that rate, and *cores busy* what the "
        "three of them keep busy of the machine's cores: evenly spaced requests share fewer "
        "syscalls and wake-ups than a saturated closed loop, so half the rate is not half "
        "the CPU.\n"
    )
    md.append(
        "| RPC | rate (req/s) | achieved | held | p50 ms | p90 ms | p99 ms | p99.9 ms | "
        "p99 from schedule ms | CPU µs / RPC | cores busy | target p99 |"
    )
    md.append("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def rate_rows(table):
    """One row per RPC of a fixed-rate table; returns the p99 per RPC."""
    p99s = {}
    for op, runs in table.items():
        if not runs:
            continue
        lat = lambda q: med(runs, lambda r: r["json"]["latency_us"][q] / 1000)  # noqa: E731
        p99 = lat("p99")
        p99s[op] = p99
        held_n = sum(bool(r["json"]["rate"]["held"]) for r in runs)
        cpu_us = med(
            runs,
            lambda r: r["svc_cpu_us"] + r["redis_cpu_us"] + (r["client_cpu_us"] or 0),
        )
        rate = med(runs, lambda r: r["json"]["rate"]["achieved_per_s"])
        busy = cpu_us * rate / 1e6 if cpu_us is not None and rate else None
        md.append(
            f"| {names[op]} | {fnum(med(runs, lambda r: r['json']['rate']['target_per_s']))} "
            f"| {fnum(med(runs, lambda r: r['json']['rate']['achieved_per_s']))} "
            f"| {held_n} of {len(runs)} runs | {fnum(lat('p50'), 2)} | {fnum(lat('p90'), 2)} "
            f"| {fnum(p99, 2)} | {fnum(lat('p999'), 2)} "
            f"| {fnum(med(runs, lambda r: r['json']['rate']['latency_from_schedule_us']['p99'] / 1000), 2)} "
            f"| {fnum(cpu_us, 0)} | {fnum(busy, 2)} of {P.get('nproc', '?')} "
            f"| ≤ {TARGET_P99_MS} ms |"
        )
    return p99s


half_p99 = rate_rows(half) if any(half.values()) else {}
pinned_p99 = {}
if any(pinned.values()):
    md.append("")
    md.append(
        "The same rates with the load generator pinned to CPU 0 and the service and Redis "
        "to the other CPU(s) (`taskset`), as a client on another host would see them; "
        "*cores busy* still counts all three programs.\n"
    )
    md.append(
        "| RPC | rate (req/s) | achieved | held | p50 ms | p90 ms | p99 ms | p99.9 ms | "
        "p99 from schedule ms | CPU µs / RPC | cores busy | target p99 |"
    )
    md.append("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    pinned_p99 = rate_rows(pinned)
md.append("")

# Errors are part of the result: a fast run that failed requests proves nothing.
errors = {}
for table in (svc, before, cluster, half, pinned):
    for runs in table.values():
        for r in runs:
            for code, n in r["json"]["errors_by_code"].items():
                errors[code] = errors.get(code, 0) + n
md.append(
    "Failed RPCs over all service runs: "
    + (", ".join(f"{code} {n}" for code, n in sorted(errors.items())) if errors else "none")
    + ".\n"
)

hwm_mib = final["hwm_kb"] / 1024
md.append("## Memory\n")
md.append(
    f"Service peak RSS over the whole run (VmHWM): **{hwm_mib:.1f} MiB**; RSS at the end: "
    f"{final['rss_kb'] / 1024:.1f} MiB.\n"
)

# --- targets ---------------------------------------------------------------
md.append("## Targets\n")
md.append("### Round 2 (issue 16)\n")
md.append("| target | measured | |")
md.append("|---|---|---|")
put_s, set_p = thr(svc["put"], "put"), rb_rps(proxy_u, "SET")
r = ratio(put_s, set_p)
md.append(
    f"| unary Put ≥ {TARGET_PUT_VS_PROXY_SET}× SET through twemproxy | {fratio(r)} "
    f"({fnum(put_s)} vs {fnum(set_p)} ops/s) | {met(r is not None and r >= TARGET_PUT_VS_PROXY_SET)} |"
)
put_cmd = med(svc["put"], lambda r: r["redis_cmd_us"])
put_cpu = med(svc["put"], lambda r: r["redis_cpu_us"])
dapr_cmd = med(dapr_u, lambda r: r["redis_cmd_us"])
dapr_cpu = med(dapr_u, lambda r: r["redis_cpu_us"])
r = ratio(put_cmd, dapr_cmd)
md.append(
    f"| Redis CPU per unary Put ≤ {TARGET_PUT_REDIS_VS_DAPR}× {DAPR}'s versioned write "
    f"(commandstats time) | {fratio(r)} ({fnum(put_cmd, 2)} vs {fnum(dapr_cmd, 2)} µs; whole "
    f"redis-server CPU {fnum(put_cpu, 1)} vs {fnum(dapr_cpu, 1)} µs = "
    f"{fratio(ratio(put_cpu, dapr_cpu))}) | {met(r is not None and r <= TARGET_PUT_REDIS_VS_DAPR)} |"
)
bp, sp = thr(svc["batchput"], "batchput"), rb_rps(direct_p, "SET")
r = ratio(bp, sp)
md.append(
    f"| BatchPut of {batch} ≥ {TARGET_BATCHPUT_VS_SET_P}× SET -P {pipeline} (keys/s) "
    f"| {fratio(r)} | {met(r is not None and r >= TARGET_BATCHPUT_VS_SET_P)} |"
)
read_refs = {
    "get": (rb_rps(proxy_u, "GET"), f"GET through twemproxy; issue 16 recorded {ROUND1_GET_VS_PROXY}"),
    "batchget": (
        rb_rps(proxy_p, "GET"),
        f"GET -P {pipeline} through twemproxy; issue 16 recorded {ROUND1_BATCHGET_VS_PROXY_P}",
    ),
    "list": (scan_keys, f"SCAN COUNT {batch}"),
    "listvalues": (scan_keys, f"SCAN COUNT {batch}"),
}
for op, (ref, what) in read_refs.items():
    now = ratio(thr(svc[op], op), ref)
    if before[op]:
        was = ratio(thr(before[op], op), ref)
        change = ratio(now, was)
        verdict = (
            "**met**"
            if change is not None and change >= 1.0
            else "**within the ±10 % spread**"
            if change is not None and change >= 0.9
            else "**missed**"
        )
        md.append(
            f"| {names[op]} no slower | {fratio(now)} of {what}; before {fratio(was)} "
            f"({fratio(change)}) | {verdict} |"
        )
    else:
        md.append(
            f"| {names[op]} no slower | {fratio(now)} of {what} | not judged: needs "
            "BENCH_BEFORE_BIN (a before binary in the same run) |"
        )
for op in ("put", "get"):
    cpu = med(svc[op], lambda r: r["svc_cpu_us"])
    md.append(
        f"| service CPU per unary {names[op]} < {TARGET_SVC_CPU_US:g} µs (round 1: 14–17 µs) "
        f"| {fnum(cpu, 1)} µs | {met(cpu is not None and cpu < TARGET_SVC_CPU_US)} |"
    )
md.append("")

md.append("### Round 1 (issue 5)\n")
md.append("| target | measured | |")
md.append("|---|---|---|")
for label, _, _, d, _, s, _, target in rows[:4]:
    t = TARGET_UNARY if "single" in label else TARGET_BATCH
    r = ratio(s, d)
    md.append(f"| {label}: ≥ {t}× direct | {fratio(r)} | {met(r is not None and r >= t)} |")
pu = max(
    (med(svc[op], lambda r: r["ping_unwatch_per_rpc"]) or 0 for op in ("get", "put") if svc[op]),
    default=None,
)
rt = max(
    (med(svc[op], lambda r: r["round_trips_per_rpc"]) or 0 for op in ("get", "put") if svc[op]),
    default=None,
)
md.append(
    f"| PING+UNWATCH per unary RPC ≈ 0 | {fnum(pu, 5)} | {met(pu is not None and pu < 0.01)} |"
)
md.append(
    f"| one Redis round trip per unary Get/Put | {fnum(rt, 3)} | "
    f"{met(rt is not None and rt < 1.05)} |"
)
for op, p99 in half_p99.items():
    md.append(
        f"| p99 ≤ {TARGET_P99_MS} ms at half max ({names[op]}) | {fnum(p99, 2)} ms | "
        f"{met(p99 is not None and p99 <= TARGET_P99_MS)} |"
    )
for op, p99 in pinned_p99.items():
    md.append(
        f"| p99 ≤ {TARGET_P99_MS} ms at half max ({names[op]}), load generator on its own core "
        f"| {fnum(p99, 2)} ms | {met(p99 is not None and p99 <= TARGET_P99_MS)} |"
    )
md.append(
    f"| service RSS ≤ {TARGET_RSS_MIB} MiB | {hwm_mib:.1f} MiB | {met(hwm_mib <= TARGET_RSS_MIB)} |"
)
md.append("")

md.append("## Machine\n")
md.append(f"- Date: {P.get('date')}")
md.append(f"- CPUs: {P.get('nproc')} ({P.get('cpu')}); memory {P.get('memory')}; kernel {P.get('kernel')}")
md.append(
    f"- Load average (1/5/15 min) before the run: {P.get('load_before')}; after: "
    f"{P.get('load_after')}. Everything (Redis, twemproxy, the service and the load "
    "generators) shares these cores, and so do other users of the machine."
)
md.append(
    f"- Redis {P.get('redis')}, nutcracker {P.get('nutcracker')}, {P.get('rustc')}, "
    f"commit {P.get('commit')}"
)
md.append("")
md.append("## Exact command\n")
md.append("```sh\n" + COMMAND + "\n```\n")
md.append(
    "Raw results (redis-benchmark CSV, state-loadgen JSON, commandstats and CPU "
    "snapshots) are left in `bench/out/`.\n"
)
limits = os.path.join(HERE, "limits.md")
if os.path.exists(limits):
    md.append(open(limits).read().rstrip() + "\n")

with open(os.path.join(DOCS, "benchmarks.md"), "w") as f:
    f.write("\n".join(md))

# --- chart -----------------------------------------------------------------
# Horizontal bars of throughput relative to direct Redis (= 1.0), one group
# per workload, with the target as a dashed line: the question the chart
# answers is "how far from Redis, and is it enough?".
W, LEFT, RIGHT, TOP_Y = 820, 210, 40, 70
BAR, GAP, GROUP_GAP = 18, 4, 26
systems = [("direct Redis", "#9e9e9e"), ("twemproxy", "#4a7fb5"), ("state-service", "#e07b28")]
group_h = len(systems) * (BAR + GAP) + GROUP_GAP
H = TOP_Y + len(rows) * group_h + 60
max_ratio = max(
    [1.0] + [ratio(v, d) or 0 for _, _, _, d, p, s, _, _ in rows for v in (p, s)]
)
scale_max = max(1.2, round(max_ratio + 0.1, 1))
plot_w = W - LEFT - RIGHT


def x(r):
    return LEFT + plot_w * min(r, scale_max) / scale_max


svg = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
    f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
    "Throughput relative to redis-benchmark straight to Redis (1.0×)</text>",
    f'<text x="{W / 2}" y="44" text-anchor="middle" fill="#555">'
    f"{escape(P.get('nproc', '?'))} cores shared by all (load average "
    f"{escape(P.get('load_before', '?').split()[0])} at start), one run, medians of "
    f"{escape(KNOBS['BENCH_REPS'])}, {escape(P.get('date', ''))}; dashed: target</text>",
]

# Grid.
step = 0.2
g = 0.0
while g <= scale_max + 1e-9:
    gx = x(g)
    svg.append(
        f'<line x1="{gx:.1f}" y1="{TOP_Y - 8}" x2="{gx:.1f}" y2="{H - 50}" '
        f'stroke="{"#bbb" if abs(g - 1) < 1e-9 else "#eee"}"/>'
    )
    svg.append(
        f'<text x="{gx:.1f}" y="{H - 36}" text-anchor="middle" fill="#555">{g:.1f}×</text>'
    )
    g = round(g + step, 10)
labels = []
for i, (label, rlabel, slabel, d, p, s, unit, target) in enumerate(rows):
    y0 = TOP_Y + i * group_h
    svg.append(
        f'<text x="{LEFT - 10}" y="{y0 + BAR + 6}" text-anchor="end" font-weight="bold">'
        f"{escape(rlabel)}</text>"
    )
    svg.append(
        f'<text x="{LEFT - 10}" y="{y0 + 2 * BAR + 10}" text-anchor="end" fill="#555">'
        f"vs {escape(slabel)} ({unit})</text>"
    )
    for j, ((name, color), value) in enumerate(zip(systems, (d, p, s))):
        y = y0 + j * (BAR + GAP)
        r = ratio(value, d) or 0
        svg.append(
            f'<rect x="{LEFT}" y="{y}" width="{max(0.5, x(r) - LEFT):.1f}" height="{BAR}" '
            f'fill="{color}"><title>{escape(name)}: {fnum(value)} {unit}</title></rect>'
        )
        text = f"{name}  {r:.2f}×  ({fnum(value)} {unit})" if value else f"{name}  –"
        tx = x(r) + 6
        anchor = "start"
        if tx > W - 220:
            tx, anchor = x(r) - 6, "end"
            labels.append(
                f'<text x="{tx:.1f}" y="{y + BAR - 5}" text-anchor="{anchor}" fill="white">'
                f"{escape(text)}</text>"
            )
        else:
            labels.append(
                # A white box under the label keeps the target line from crossing it
                # (about 6.7 px per character at 12 px sans-serif).
                f'<rect x="{tx - 2:.1f}" y="{y + 1}" width="{len(text) * 6.7 + 4:.1f}" '
                f'height="{BAR - 2}" fill="white"/>'
                f'<text x="{tx:.1f}" y="{y + BAR - 5}" text-anchor="{anchor}">{escape(text)}</text>'
            )
# Targets over the bars, under the labels of the bars (which sit on white boxes).
for i, row in enumerate(rows):
    if row[7] is None:
        continue
    y0 = TOP_Y + i * group_h
    tx = LEFT + plot_w * min(row[7], scale_max) / scale_max
    svg.append(
        f'<line x1="{tx:.1f}" y1="{y0 - 4}" x2="{tx:.1f}" '
        f'y2="{y0 + len(systems) * (BAR + GAP)}" stroke="#c62828" stroke-width="2" '
        f'stroke-dasharray="5,3"><title>target {row[7]:.2f}×</title></line>'
    )
svg.extend(labels)
# Legend.
lx = LEFT
for name, color in systems:
    svg.append(f'<rect x="{lx}" y="{H - 22}" width="12" height="12" fill="{color}"/>')
    svg.append(f'<text x="{lx + 16}" y="{H - 12}">{escape(name)}</text>')
    lx += 130
svg.append(
    f'<line x1="{lx}" y1="{H - 16}" x2="{lx + 18}" y2="{H - 16}" stroke="#c62828" '
    'stroke-width="2" stroke-dasharray="5,3"/>'
)
svg.append(f'<text x="{lx + 24}" y="{H - 12}">target</text>')
svg.append("</svg>")
with open(os.path.join(DOCS, "benchmarks.svg"), "w") as f:
    f.write("\n".join(svg) + "\n")
