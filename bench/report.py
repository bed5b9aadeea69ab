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


def reps(pattern):
    """Sorted raw files of every repetition of one measurement."""
    return sorted(glob.glob(os.path.join(RAW, pattern)))


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rb_results(name):
    """redis-benchmark CSV of every repetition: {test: [(rps, p50, p99)]}."""
    out = {}
    for path in reps(f"{name}-[0-9]*.csv"):
        with open(path) as f:
            for row in csv.DictReader(f):
                out.setdefault(row["test"], []).append(
                    (
                        float(row["rps"]),
                        float(row["p50_latency_ms"]),
                        float(row["p99_latency_ms"]),
                    )
                )
    return out


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
    calls = {}
    for line in open(path):
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line.strip())
        if m:
            calls[m.group(1)] = int(m.group(2))
    return calls


def round_trips(delta):
    """Commands the service sent, as opposed to commands a script ran.

    commandstats counts a GET inside a Lua script like a GET from a client, so
    plain GET/SET/DEL/TIME count as round trips only in runs without scripts
    (every benchmark run is one RPC kind, so a run either uses scripts or not).
    MULTI…EXEC counts once, as EXEC.
    """
    top = ("exec", "evalsha", "eval", "fcall", "mget", "ping", "unwatch")
    n = sum(delta.get(k, 0) for k in top)
    if not any(delta.get(k, 0) for k in ("evalsha", "eval", "fcall")):
        n += sum(delta.get(k, 0) for k in ("get", "set", "del", "time"))
    return n


def service_run(base):
    """Everything measured around one state-loadgen run."""
    r = json.load(open(base + ".json"))
    before, after = snapshot(base + ".before"), snapshot(base + ".after")
    c0, c1 = cmdstats(base + ".cmdstats.before"), cmdstats(base + ".cmdstats.after")
    delta = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1}
    # INFO is our own probe, not the service's.
    delta.pop("info", None)
    delta = {k: v for k, v in delta.items() if v > 0}
    # Server-side counters cover the warm-up too, so divide by every request.
    rpcs = r["requests"] + r.get("warmup_requests", 0)
    per = lambda n: n / rpcs if rpcs else None  # noqa: E731
    return {
        "json": r,
        "rpcs": rpcs,
        "cmds_per_rpc": per(sum(delta.values())),
        "round_trips_per_rpc": per(round_trips(delta)),
        "ping_unwatch_per_rpc": per(delta.get("ping", 0) + delta.get("unwatch", 0)),
        "exists_ttl_per_rpc": per(
            sum(delta.get(k, 0) for k in ("exists", "ttl", "pttl"))
        ),
        "breakdown": {k: per(v) for k, v in sorted(delta.items(), key=lambda kv: -kv[1])},
        "svc_cpu_per_1k": per(after["svc"] - before["svc"]) * 1000,
        "redis_cpu_per_1k": per(after["redis"] - before["redis"]) * 1000,
        "client_cpu_per_1k": r["client_cpu_s"] / r["requests"] * 1000
        if r["requests"]
        else None,
        "rss_kb": after["rss_kb"],
        "hwm_kb": after["hwm_kb"],
    }


def service(op):
    return [service_run(p[: -len(".json")]) for p in reps(f"service-{op}-[0-9]*.json")]


def med(runs, f):
    return median([f(r) for r in runs])


direct_u, proxy_u = rb_results("direct-unary"), rb_results("proxy-unary")
direct_p, proxy_p = rb_results("direct-pipelined"), rb_results("proxy-pipelined")
svc = {op: service(op) for op in ("get", "put", "batchget", "batchput")}
half = {op: service(f"{op}-half") for op in ("get", "put")}
pinned = {op: service(f"{op}-pinned") for op in ("get", "put")}
final = snapshot(os.path.join(OUT, "final.snapshot"))


def rb_med(results, test, i=0):
    return median([t[i] for t in results.get(test, [])])


P = MACHINE  # short alias for the text below
pipeline = KNOBS["BENCH_PIPELINE"]
batch = KNOBS["BENCH_BATCH"]

# (label, redis command label, service label, direct, proxy, service, unit, target)
rows = [
    (
        "single GET vs Get",
        "GET",
        "Get",
        rb_med(direct_u, "GET"),
        rb_med(proxy_u, "GET"),
        med(svc["get"], lambda r: r["json"]["ops_per_s"]),
        "ops/s",
        TARGET_UNARY,
    ),
    (
        "single SET vs Put",
        "SET",
        "Put",
        rb_med(direct_u, "SET"),
        rb_med(proxy_u, "SET"),
        med(svc["put"], lambda r: r["json"]["ops_per_s"]),
        "ops/s",
        TARGET_UNARY,
    ),
    (
        f"GET -P {pipeline} vs BatchGet of {batch}",
        f"GET -P {pipeline}",
        f"BatchGet×{batch}",
        rb_med(direct_p, "GET"),
        rb_med(proxy_p, "GET"),
        med(svc["batchget"], lambda r: r["json"]["keys_per_s"]),
        "keys/s",
        TARGET_BATCH,
    ),
    (
        f"SET -P {pipeline} vs BatchPut of {batch}",
        f"SET -P {pipeline}",
        f"BatchPut×{batch}",
        rb_med(direct_p, "SET"),
        rb_med(proxy_p, "SET"),
        med(svc["batchput"], lambda r: r["json"]["keys_per_s"]),
        "keys/s",
        TARGET_BATCH,
    ),
]


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


# --- markdown --------------------------------------------------------------
md = []
md.append("# Benchmarks\n")
md.append(
    "state-service against Redis itself, on one machine in one run: `redis-benchmark` "
    "straight to Redis, `redis-benchmark` through twemproxy (nutcracker), and "
    "`state-loadgen` against the service (release build) in front of the same Redis. "
    f"Same concurrency ({KNOBS['BENCH_CONCURRENCY']}), "
    f"key space ({KNOBS['BENCH_KEYS']} keys) and value size "
    f"({KNOBS['BENCH_VALUE_SIZE']} B) for all three; every "
    f"figure is the median of {KNOBS['BENCH_REPS']} "
    "repetitions, interleaved. Generated by `bench/compare.sh`; do not edit by hand "
    "(the analysis comes from `bench/limits.md`).\n"
)
md.append("![Throughput relative to direct Redis](benchmarks.svg)\n")
md.append("## Throughput\n")
md.append(
    "| workload | direct Redis | twemproxy | state-service | twemproxy / direct | "
    "service / direct | target |"
)
md.append("|---|---:|---:|---:|---:|---:|---:|")
for label, _, _, d, p, s, unit, target in rows:
    md.append(
        f"| {label} ({unit}) | {fnum(d)} | {fnum(p)} | {fnum(s)} | "
        f"{fratio(ratio(p, d))} | {fratio(ratio(s, d))} | ≥ {target}× |"
    )
md.append("")

# Cost per RPC.
md.append("## Cost per request of the service\n")
md.append(
    "Redis counters are `INFO commandstats` deltas around each run divided by every RPC "
    "of the run (warm-up included); commands run inside a Lua script are counted by "
    "Redis too, so *commands/RPC* is the work Redis does, and *round trips / RPC* counts "
    "the commands the service itself sent (GET, MGET, EVALSHA, EXEC, PING, UNWATCH; a "
    "command run inside a script is not a round trip). The health check PINGs each pooled "
    "connection and reads Redis's clock (TIME) once a second, which is included. CPU seconds per 1,000 RPCs come from `/proc/<pid>/stat`; client CPU is "
    "`state-loadgen`'s own, which shares the two cores with the service and Redis.\n"
)
md.append(
    "| RPC | commands / RPC | round trips / RPC | PING+UNWATCH / RPC | EXISTS+TTL+PTTL / RPC "
    "| service CPU s / 1k | Redis CPU s / 1k | loadgen CPU s / 1k | p50 ms | p99 ms | "
    "commands per RPC (top) |"
)
md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
names = {
    "get": "Get",
    "put": "Put",
    "batchget": f"BatchGet×{batch}",
    "batchput": f"BatchPut×{batch}",
}
for op, runs in svc.items():
    if not runs:
        continue
    # The breakdown of the median run by commands/RPC.
    mid = sorted(runs, key=lambda r: r["cmds_per_rpc"])[len(runs) // 2]
    top = ", ".join(
        f"{k} {v:.2f}" for k, v in list(mid["breakdown"].items())[:6] if v >= 0.005
    )
    md.append(
        f"| {names[op]} | {fnum(med(runs, lambda r: r['cmds_per_rpc']), 2)} "
        f"| {fnum(med(runs, lambda r: r['round_trips_per_rpc']), 3)} "
        f"| {fnum(med(runs, lambda r: r['ping_unwatch_per_rpc']), 5)} "
        f"| {fnum(med(runs, lambda r: r['exists_ttl_per_rpc']), 2)} "
        f"| {fnum(med(runs, lambda r: r['svc_cpu_per_1k']), 3)} "
        f"| {fnum(med(runs, lambda r: r['redis_cpu_per_1k']), 3)} "
        f"| {fnum(med(runs, lambda r: r['client_cpu_per_1k']), 3)} "
        f"| {fnum(med(runs, lambda r: r['json']['latency_us']['p50'] / 1000), 2)} "
        f"| {fnum(med(runs, lambda r: r['json']['latency_us']['p99'] / 1000), 2)} "
        f"| {top} |"
    )
md.append("")

# Redis-side view of redis-benchmark, for comparison of Redis CPU per key.
def rb_redis_cpu(name, requests_key):
    out = []
    for path in reps(f"{name}-[0-9]*.csv"):
        base = path[: -len(".csv")]
        b, a = snapshot(base + ".before"), snapshot(base + ".after")
        n = int(KNOBS[requests_key]) * 2  # SET + GET
        out.append((a["redis"] - b["redis"]) / n * 1000)
    return median(out)


def rb_client_cpu(name, requests_key):
    out = []
    for path in reps(f"{name}-[0-9]*.time"):
        user, system = (float(x) for x in open(path).read().split()[:2])
        out.append((user + system) / (int(KNOBS[requests_key]) * 2) * 1000)
    return median(out)


md.append(
    "For comparison, under redis-benchmark straight to Redis (SET and GET together), CPU s "
    "per 1,000 commands: Redis "
    f"{fnum(rb_redis_cpu('direct-unary', 'BENCH_UNARY_REQUESTS'), 3)} single and "
    f"{fnum(rb_redis_cpu('direct-pipelined', 'BENCH_PIPELINED_REQUESTS'), 4)} pipelined; "
    "the redis-benchmark client itself "
    f"{fnum(rb_client_cpu('direct-unary', 'BENCH_UNARY_REQUESTS'), 3)} single and "
    f"{fnum(rb_client_cpu('direct-pipelined', 'BENCH_PIPELINED_REQUESTS'), 4)} pipelined.\n"
)

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
            # CPU s per 1,000 RPCs is ms per RPC.
            lambda r: (
                r["svc_cpu_per_1k"] + r["redis_cpu_per_1k"] + (r["client_cpu_per_1k"] or 0)
            )
            * 1000,
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


half_p99 = rate_rows(half)
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
for runs in list(svc.values()) + list(half.values()) + list(pinned.values()):
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

md.append("## Targets\n")
md.append("| target | measured | |")
md.append("|---|---|---|")
for label, _, _, d, _, s, _, target in rows:
    r = ratio(s, d)
    md.append(f"| {label}: ≥ {target}× direct | {fratio(r)} | {met(r is not None and r >= target)} |")
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
W, LEFT, RIGHT, TOP = 820, 210, 40, 70
BAR, GAP, GROUP_GAP = 18, 4, 26
systems = [("direct Redis", "#9e9e9e"), ("twemproxy", "#4a7fb5"), ("state-service", "#e07b28")]
group_h = len(systems) * (BAR + GAP) + GROUP_GAP
H = TOP + len(rows) * group_h + 60
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
        f'<line x1="{gx:.1f}" y1="{TOP - 8}" x2="{gx:.1f}" y2="{H - 50}" '
        f'stroke="{"#bbb" if abs(g - 1) < 1e-9 else "#eee"}"/>'
    )
    svg.append(
        f'<text x="{gx:.1f}" y="{H - 36}" text-anchor="middle" fill="#555">{g:.1f}×</text>'
    )
    g = round(g + step, 10)
labels = []
for i, (label, rlabel, slabel, d, p, s, unit, target) in enumerate(rows):
    y0 = TOP + i * group_h
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
    y0 = TOP + i * group_h
    tx = LEFT + plot_w * min(row[7], scale_max) / scale_max
    svg.append(
        f'<line x1="{tx:.1f}" y1="{y0 - 4}" x2="{tx:.1f}" '
        f'y2="{y0 + len(systems) * (BAR + GAP)}" stroke="#c62828" stroke-width="2" '
        f'stroke-dasharray="5,3"><title>target {row[7]}×</title></line>'
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
