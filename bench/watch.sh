#!/usr/bin/env bash
# Watch (issue 14): what the change feed costs writers, and what it delivers.
#
# On this machine, in one run, against a private redis-server (no
# persistence) on a free port, with the release builds of state-service and
# state-loadgen:
#
#   1. Put and BatchPut throughput (closed loop) with the feed off (no
#      --watch), on with no watcher, and on with 100 watchers of the whole
#      tenant (every event goes to all 100);
#   2. end-to-end event latency (write sent → event received by a watcher,
#      values stamped with their send time) at a fixed Put rate;
#   3. the service's RSS before and while 1,000 idle watchers are open.
#
# bench/compare.sh runs it too with BENCH_WATCH=1. Raw JSON goes to
# $BENCH_OUT/watch (default bench/out/watch). Runtime: about 2 minutes.
#
# Knobs: BENCH_DURATION=5s BENCH_WARMUP=1s BENCH_CONCURRENCY=50
# BENCH_CONNECTIONS=8 BENCH_KEYS=100000 BENCH_VALUE_SIZE=64 BENCH_BATCH=100
# BENCH_WATCH_RATE=2000 (Puts/s of the latency run) BENCH_IDLE_WATCHERS=1000
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DURATION=${BENCH_DURATION:-5s}
BENCH_WARMUP=${BENCH_WARMUP:-1s}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-50}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-8}
BENCH_KEYS=${BENCH_KEYS:-100000}
BENCH_VALUE_SIZE=${BENCH_VALUE_SIZE:-64}
BENCH_BATCH=${BENCH_BATCH:-100}
BENCH_WATCH_RATE=${BENCH_WATCH_RATE:-2000}
BENCH_IDLE_WATCHERS=${BENCH_IDLE_WATCHERS:-1000}
BENCH_OUT=${BENCH_OUT:-bench/out}
case $BENCH_OUT in /*) OUT=$BENCH_OUT/watch ;; *) OUT=$ROOT/$BENCH_OUT/watch ;; esac
mkdir -p "$OUT"

if [ -z "${BENCH_SERVICE_BIN:-}" ] || [ -z "${BENCH_LOADGEN_BIN:-}" ]; then
  cargo build --release -q -p state-service -p state-loadgen
fi
SERVICE=${BENCH_SERVICE_BIN:-$ROOT/target/release/state-service}
LOADGEN=${BENCH_LOADGEN_BIN:-$ROOT/target/release/state-loadgen}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" >/dev/null &
PIDS+=($!)
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done

SPID=""
start_service() { # $@: extra flags
  [ -z "$SPID" ] || { kill "$SPID"; wait "$SPID" 2>/dev/null || true; }
  redis-cli -p "$RPORT" flushall >/dev/null
  SPORT=$(free_port)
  "$SERVICE" --listen "127.0.0.1:$SPORT" --redis-url "redis://127.0.0.1:$RPORT" "$@" \
    >"$OUT/service.log" 2>&1 &
  SPID=$!
  PIDS+=("$SPID")
  for _ in $(seq 100); do
    "$SERVICE" health --addr "127.0.0.1:$SPORT" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "state-service did not become SERVING" >&2; exit 1
}
loadgen() { # $1: output name, rest: loadgen flags
  local name=$1; shift
  redis-cli -p "$RPORT" config resetstat >/dev/null
  "$LOADGEN" --target "http://127.0.0.1:$SPORT" --connections "$BENCH_CONNECTIONS" \
    --concurrency "$BENCH_CONCURRENCY" --keys "$BENCH_KEYS" --value-size "$BENCH_VALUE_SIZE" \
    --batch-size "$BENCH_BATCH" --duration "$BENCH_DURATION" --warmup "$BENCH_WARMUP" \
    --json "$@" >"$OUT/$name.json"
  redis-cli -p "$RPORT" info commandstats | tr -d '\r' >"$OUT/$name.redis.txt"
}
# Redis CPU (µs) per written key in the scripts of run $1 ($2 keys per call).
redis_us() {
  awk -F'[:,=]' -v per="$2" '/^cmdstat_evalsha:/ { printf "%.2f", $7 / per }' "$OUT/$1.redis.txt"
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$SPID/status"; }
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(round(v) if isinstance(v,float) else v)' "$@"; }

echo "| op | feed off | feed on, no watcher | feed on, 100 watchers |"
echo "|---|---|---|---|"
rows=()
for op in put batch-put; do
  start_service
  loadgen "$op-off" --mix "$op=1"
  start_service --watch
  loadgen "$op-on" --mix "$op=1"
  loadgen "$op-on100" --mix "$op=1" --watchers 100
  unit=ops/s; [ "$op" = batch-put ] && unit="keys/s"
  key=ops_per_s; [ "$op" = batch-put ] && key=keys_per_s
  per=1; [ "$op" = batch-put ] && per=$BENCH_BATCH
  rows+=("| $op | $(redis_us "$op-off" "$per") | $(redis_us "$op-on" "$per") | $(redis_us "$op-on100" "$per") |")
  echo "| $op ($unit) | $(field "$OUT/$op-off.json" "$key") | $(field "$OUT/$op-on.json" "$key") | $(field "$OUT/$op-on100.json" "$key") (watchers received $(field "$OUT/$op-on100.json" watch.events_per_s) events/s, ended: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["watch"]["ended_by_reason"] or "none")' "$OUT/$op-on100.json")) |"
done

echo
echo "Redis CPU per written key in the write scripts (INFO commandstats, EVALSHA usec_per_call / keys per call):"
echo
echo "| op | feed off | feed on, no watcher | feed on, 100 watchers |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"

start_service --watch
[ "$BENCH_VALUE_SIZE" -ge 8 ] || { echo "BENCH_VALUE_SIZE must be at least 8 (the send time)" >&2; exit 1; }
loadgen latency --mix put=1 --rate "$BENCH_WATCH_RATE" --watchers 1 --watch-values
echo
echo "End-to-end event latency at $BENCH_WATCH_RATE Puts/s, 1 watcher: p50 $(field "$OUT/latency.json" watch.latency_us.p50) µs, p99 $(field "$OUT/latency.json" watch.latency_us.p99) µs (Put itself: p50 $(field "$OUT/latency.json" latency_us.p50) µs, p99 $(field "$OUT/latency.json" latency_us.p99) µs)"

start_service --watch --max-watchers-per-tenant "$BENCH_IDLE_WATCHERS"
before=$(rss_kib)
"$LOADGEN" --target "http://127.0.0.1:$SPORT" --connections 8 --concurrency 1 --mix put=1 \
  --rate 1 --duration 8s --warmup 0s --watchers "$BENCH_IDLE_WATCHERS" --json >"$OUT/idle.json" &
LPID=$!
sleep 5
during=$(rss_kib)
wait "$LPID"
echo "RSS: $before KiB before, $during KiB with $BENCH_IDLE_WATCHERS idle watchers open ($(( (during - before) * 1024 / BENCH_IDLE_WATCHERS )) bytes per watcher)"
