#!/usr/bin/env bash
# Instructions per RPC of the service, by function, under callgrind.
#
# Starts a private redis-server (free loopback port, never 6379) and the
# release build of state-service under `valgrind --tool=callgrind`, prefills
# the key space through the service, warms up, zeroes the counters, drives
# exactly N requests of one kind with state-loadgen, dumps the counters and
# prints instructions per RPC by crate and by function (bench/callgrind_report.py).
# Instruction counts do not depend on what else runs on the machine, which
# makes A/B comparisons of two builds exact to a fraction of a percent even on
# busy cores.
#
#   bench/callgrind-service.sh [OP] [extra state-service flags...]
#     OP: a state-loadgen op (put, get, batch-put, …; default put)
#   env: CG_REQUESTS=20000  measured requests
#        CG_KEYS=10000      key space (prefilled)
#        CG_VALUE_SIZE=64   value bytes
#        CG_CONCURRENCY=50  in-flight requests (CG_CONNECTIONS=8 connections)
#        CG_SERVICE_BIN     service binary (default target/release/state-service;
#                           build it with CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
#                           for file/line attribution)
#        CG_OUT=bench/out/callgrind  output directory (callgrind.out, summary.txt)
#
# Redis command and pool timeouts are raised to 30 s (same code path, only
# longer timers): under valgrind the service runs ~50x slower, and the
# prefill's batches would miss the default 1 s on a busy machine.
# The summary divides by the requests the load generator completed; the
# service's own background work in the same interval (one health PING per
# pooled connection per second) is included and is ≈ 0.1 % at these rates.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OP=${1:-put}
shift || true
CG_REQUESTS=${CG_REQUESTS:-20000}
CG_KEYS=${CG_KEYS:-10000}
CG_VALUE_SIZE=${CG_VALUE_SIZE:-64}
CG_CONCURRENCY=${CG_CONCURRENCY:-50}
CG_CONNECTIONS=${CG_CONNECTIONS:-8}
SVC_BIN=${CG_SERVICE_BIN:-$ROOT/target/release/state-service}
LOADGEN=$ROOT/target/release/state-loadgen
OUT=${CG_OUT:-$ROOT/bench/out/callgrind}
mkdir -p "$OUT"
for t in valgrind callgrind_control callgrind_annotate redis-server python3; do
  command -v "$t" >/dev/null || { echo "callgrind-service.sh: $t is missing" >&2; exit 1; }
done
[ -x "$SVC_BIN" ] && [ -x "$LOADGEN" ] || {
  echo "build first: cargo build --release -p state-service --bin state-service -p state-loadgen --bin state-loadgen" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$OUT" --logfile "$OUT/redis.log" &
PIDS+=($!)
SVC_PORT=$(free_port)
rm -f "$OUT"/callgrind.out*
# shellcheck disable=SC2068 # extra flags pass through as given
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
  --dump-line=yes --dump-instr=no --collect-jumps=no \
  "$SVC_BIN" --listen "127.0.0.1:$SVC_PORT" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
  --redis-command-timeout 30s --redis-pool-wait-timeout 30s $@ \
  >"$OUT/service.log" 2>&1 &
SVC_PID=$!
PIDS+=("$SVC_PID")
for i in $(seq 1 150); do
  "$SVC_BIN" health --addr "127.0.0.1:$SVC_PORT" --timeout 2s >/dev/null 2>&1 && break
  [ "$i" = 150 ] && { echo "the service did not become SERVING; see $OUT/service.log" >&2; exit 1; }
  sleep 0.2
done

lg() {
  "$LOADGEN" --target "http://127.0.0.1:$SVC_PORT" --json --keys "$CG_KEYS" \
    --value-size "$CG_VALUE_SIZE" --concurrency "$CG_CONCURRENCY" \
    --connections "$CG_CONNECTIONS" --timeout 30s --warmup 0s "$@"
}
lg --prefill --requests 1 >/dev/null
# Warm: connections, scripts loaded, allocator and caches settled.
lg --mix "$OP=1" --requests 2000 >/dev/null
callgrind_control -z "$SVC_PID" >/dev/null
lg --mix "$OP=1" --requests "$CG_REQUESTS" >"$OUT/loadgen.json"
callgrind_control -d "$SVC_PID" >/dev/null
# The dump is written asynchronously by the valgrind'ed process.
for i in $(seq 1 100); do
  ls "$OUT"/callgrind.out.* >/dev/null 2>&1 && break
  sleep 0.2
done
sleep 1
DUMP=$(ls -t "$OUT"/callgrind.out.* | head -1)
N=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$OUT/loadgen.json")
{
  echo "$OP: $N requests ($(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["errors"])' "$OUT/loadgen.json") errors), dump $DUMP"
  echo; echo "-- self, by crate --"
  python3 bench/callgrind_report.py "$DUMP" "$N" crates 25
  echo; echo "-- self, by function --"
  python3 bench/callgrind_report.py "$DUMP" "$N" self 40
} | tee "$OUT/summary.txt"
echo "more: bench/callgrind_report.py $DUMP $N {self|crates|files|callees REGEX|callers REGEX}" >&2
