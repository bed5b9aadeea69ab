#!/usr/bin/env python3
"""Redis CPU of the PUT and BATCH scripts with and without the change feed.

Extracts the scripts from src/store/redis/scripts.rs exactly as the service
builds them (feed variant: FEED_PRELUDE in front; plain: the `-- feed` lines
cut), then drives each with redis-benchmark against a private redis-server
and reads INFO commandstats. Alternates the variants so background load hits
both alike. Prints µs of Redis CPU per written key.

usage: bench/lua-lab/feed_cost.py [rounds]
"""
import re, socket, subprocess, sys, time, os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
src = open(os.path.join(ROOT, "src/store/redis/scripts.rs")).read()

def raw(name):
    return re.search(r'const %s: &str = r#"(.*?)"#;' % name, src, re.S).group(1)

prelude = raw("FEED_PRELUDE")
def plain(body):
    return "".join(l + "\n" for l in body.split("\n") if not l.rstrip().endswith("-- feed"))
def feed(body):
    return prelude + body

def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

P = port()
srv = subprocess.Popen(["redis-server", "--port", str(P), "--save", "", "--appendonly", "no"],
                       stdout=subprocess.DEVNULL)
time.sleep(0.5)
cli = lambda *a: subprocess.run(["redis-cli", "-p", str(P), *a], capture_output=True).stdout.decode()

now = "1796228363189000"
record = b"\xff\x02" + now.encode() + b"0" * 14 + b"\x0a\x40" + b"x" * 62
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
N = 100000

def bench(script, keys, args, n=N):
    cli("config", "resetstat")
    cmd = [b"redis-benchmark", b"-p", str(P).encode(), b"-n", str(n).encode(), b"-c", b"50", b"-q",
           b"-r", b"100000", b"EVAL", b"#!lua\n" + script.encode(), str(len(keys)).encode(),
           *[k.encode() for k in keys], *args]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    line = [l for l in cli("info", "commandstats").splitlines() if l.startswith("cmdstat_eval:")][0]
    return float(re.search(r"usec_per_call=([\d.]+)", line).group(1))

FK = ["state:#feed:t", "state:#feed-exp", "state:#feed-ver"]
put = raw("PUT_SRC")
batch = raw("BATCH_SRC")
res = {k: [] for k in ("put plain", "put feed", "batch plain", "batch feed")}
bkeys = ["state:t:key:__rand_int__" + chr(97 + i) for i in range(10)]
bargs = [now.encode()] + [x for _ in range(10) for x in (record, b"")]
for r in range(rounds):
    cli("flushall")
    res["put plain"].append(bench(plain(put), ["state:t:key:__rand_int__"], [record, now.encode()]))
    cli("flushall")
    res["put feed"].append(bench(feed(put), ["state:t:key:__rand_int__", *FK], [record, now.encode(), b"10000"]))
    cli("flushall")
    res["batch plain"].append(bench(plain(batch), bkeys, bargs, N // 5) / 10)
    cli("flushall")
    res["batch feed"].append(bench(feed(batch), bkeys + FK, bargs + [b"10000"], N // 5) / 10)
srv.terminate()
for k, v in res.items():
    v.sort()
    print(f"{k:12} µs/key (median of {rounds}): {v[len(v)//2]:.2f}   all: {v}")
