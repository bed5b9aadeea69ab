#!/usr/bin/env bash
# One-run comparison of state-service with Redis itself (issue 5).
#
# On this machine and in one run: starts a private redis-server (no
# persistence), nutcracker (twemproxy) in front of it on another port, and the
# release build of state-service against the same Redis. Then, at the same
# concurrency, key space and value size, it runs redis-benchmark direct,
# redis-benchmark through twemproxy and state-loadgen against the service —
# single GET/SET against Get/Put, pipelined (-P 16) GET/SET against
# BatchGet/BatchPut of 100 keys — each BENCH_REPS times, interleaved so that
# background load drifts over all three alike. Around every service run it
# reads INFO commandstats and the CPU counters of the service and Redis; at the
# end it measures p99 at half of the service's best Get/Put rate (fixed-rate
# mode). bench/report.py turns the raw results into docs/benchmarks.md and
# docs/benchmarks.svg.
#
# It never touches a Redis it did not start: every server runs on a free
# loopback port and is killed on exit. Raw results go to bench/out/ (ignored by
# git). Runtime with the defaults: about 5 minutes.
#
# Knobs (environment):
#   BENCH_REPS=3                repetitions of every measurement (median taken)
#   BENCH_DURATION=5s           measured time of each state-loadgen run
#   BENCH_WARMUP=1s             unmeasured warm-up before each state-loadgen run
#   BENCH_UNARY_REQUESTS=300000 redis-benchmark -n for single GET/SET
#   BENCH_PIPELINED_REQUESTS=2000000  redis-benchmark -n for -P runs
#   BENCH_CONCURRENCY=50        clients (redis-benchmark -c) / in-flight RPCs
#   BENCH_CONNECTIONS=8         HTTP/2 connections of state-loadgen
#   BENCH_KEYS=100000           key space (redis-benchmark -r)
#   BENCH_VALUE_SIZE=64         value bytes (redis-benchmark -d)
#   BENCH_PIPELINE=16           redis-benchmark -P
#   BENCH_BATCH=100             keys per BatchGet/BatchPut
#   BENCH_DOCS=docs             where benchmarks.md and benchmarks.svg go
#   BENCH_SERVICE_ARGS=""       extra flags for state-service (e.g. pool size)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BENCH_REPS=${BENCH_REPS:-3}
BENCH_DURATION=${BENCH_DURATION:-5s}
BENCH_WARMUP=${BENCH_WARMUP:-1s}
BENCH_UNARY_REQUESTS=${BENCH_UNARY_REQUESTS:-300000}
BENCH_PIPELINED_REQUESTS=${BENCH_PIPELINED_REQUESTS:-2000000}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-50}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-8}
BENCH_KEYS=${BENCH_KEYS:-100000}
BENCH_VALUE_SIZE=${BENCH_VALUE_SIZE:-64}
BENCH_PIPELINE=${BENCH_PIPELINE:-16}
BENCH_BATCH=${BENCH_BATCH:-100}
BENCH_DOCS=${BENCH_DOCS:-docs}
BENCH_SERVICE_ARGS=${BENCH_SERVICE_ARGS:-}

OUT=$ROOT/bench/out
RAW=$OUT/raw
rm -rf "$OUT"
mkdir -p "$RAW" "$OUT/redis"

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools -----------------------------------------------------------------
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v nutcracker >/dev/null 2>&1 || missing+=(nutcracker)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # Debian starts the packaged services on install where it may; ours are
  # started below on their own ports, so those are not needed.
fi
command -v nutcracker >/dev/null 2>&1 || PATH=$PATH:/usr/sbin

log "building state-service and state-loadgen (release)"
cargo build --release --locked -p state-service --bin state-service -p state-loadgen >&2
SVC_BIN=$ROOT/target/release/state-service
LOADGEN=$ROOT/target/release/state-loadgen

# --- servers ---------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
  local port=$1 i
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on 127.0.0.1:$port after 10 s" >&2
  return 1
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
  --dir "$OUT/redis" --logfile "$OUT/redis/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT"

PROXY_PORT=$(free_port)
PROXY_STATS_PORT=$(free_port)
cat >"$OUT/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$PROXY_PORT
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  preconnect: true
  servers:
    - 127.0.0.1:$REDIS_PORT:1
EOF
nutcracker -c "$OUT/nutcracker.yml" -s "$PROXY_STATS_PORT" -a 127.0.0.1 -o "$OUT/nutcracker.log" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_port "$PROXY_PORT"

SVC_PORT=$(free_port)
# shellcheck disable=SC2086 # BENCH_SERVICE_ARGS is a list of flags
RUST_LOG=warn "$SVC_BIN" --listen "127.0.0.1:$SVC_PORT" \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" $BENCH_SERVICE_ARGS \
  >"$OUT/service.log" 2>&1 &
SVC_PID=$!
PIDS+=("$SVC_PID")
wait_port "$SVC_PORT"
# SERVING once the service has reached Redis.
for i in $(seq 1 50); do
  "$SVC_BIN" health --addr "127.0.0.1:$SVC_PORT" --timeout 1s >/dev/null 2>&1 && break
  [ "$i" = 50 ] && { echo "state-service did not become SERVING" >&2; exit 1; }
  sleep 0.2
done

CLK_TCK=$(getconf CLK_TCK)
# CPU ticks (user + system) of a process.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# One line: service, redis and proxy CPU ticks, service VmRSS and VmHWM (kB).
snapshot() {
  printf '%s %s %s %s %s\n' "$(cpu_ticks "$SVC_PID")" "$(cpu_ticks "$REDIS_PID")" \
    "$(cpu_ticks "$PROXY_PID")" \
    "$(awk '/^VmRSS/{print $2}' "/proc/$SVC_PID/status")" \
    "$(awk '/^VmHWM/{print $2}' "/proc/$SVC_PID/status")"
}

# --- machine ---------------------------------------------------------------
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
  echo "memory: $(free -h | awk '/^Mem:/{print $2}')"
  echo "kernel: $(uname -r)"
  echo "load_before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "redis: $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
  echo "nutcracker: $(nutcracker --version 2>&1 | sed -n 's/.*nutcracker-\([0-9.]*\).*/\1/p')"
  echo "rustc: $(rustc --version)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "clk_tck: $CLK_TCK"
} >"$OUT/machine.txt"
{
  printf 'BENCH_REPS=%s BENCH_DURATION=%s BENCH_WARMUP=%s ' "$BENCH_REPS" "$BENCH_DURATION" "$BENCH_WARMUP"
  printf 'BENCH_UNARY_REQUESTS=%s BENCH_PIPELINED_REQUESTS=%s ' "$BENCH_UNARY_REQUESTS" "$BENCH_PIPELINED_REQUESTS"
  printf 'BENCH_CONCURRENCY=%s BENCH_CONNECTIONS=%s BENCH_KEYS=%s ' "$BENCH_CONCURRENCY" "$BENCH_CONNECTIONS" "$BENCH_KEYS"
  printf 'BENCH_VALUE_SIZE=%s BENCH_PIPELINE=%s BENCH_BATCH=%s' "$BENCH_VALUE_SIZE" "$BENCH_PIPELINE" "$BENCH_BATCH"
  [ -n "$BENCH_SERVICE_ARGS" ] && printf ' BENCH_SERVICE_ARGS=%q' "$BENCH_SERVICE_ARGS"
  printf ' bench/compare.sh\n'
} >"$OUT/command.txt"

# --- runs ------------------------------------------------------------------
# redis-benchmark NAME PORT PIPELINE REQUESTS
rb() {
  local name=$1 port=$2 pipeline=$3 requests=$4
  log "$name"
  snapshot >"$RAW/$name.before"
  # Through twemproxy redis-benchmark warns that it cannot read CONFIG: harmless.
  # `time` records the client's own CPU (user and system seconds), to set
  # against state-loadgen's.
  local TIMEFORMAT='%U %S'
  { time redis-benchmark -h 127.0.0.1 -p "$port" -c "$BENCH_CONCURRENCY" -d "$BENCH_VALUE_SIZE" \
    -r "$BENCH_KEYS" -n "$requests" -P "$pipeline" -t set,get --csv \
    2>"$RAW/$name.err" >"$RAW/$name.csv"; } 2>"$RAW/$name.time"
  snapshot >"$RAW/$name.after"
}

# loadgen NAME MIX [extra flags...]
lg() {
  local name=$1 mix=$2
  shift 2
  log "$name"
  redis-cli -p "$REDIS_PORT" INFO commandstats >"$RAW/$name.cmdstats.before"
  snapshot >"$RAW/$name.before"
  # shellcheck disable=SC2086 # LG_WRAP is a command prefix (taskset …) or empty
  ${LG_WRAP:-} "$LOADGEN" --target "http://127.0.0.1:$SVC_PORT" --json --mix "$mix" \
    --connections "$BENCH_CONNECTIONS" --concurrency "$BENCH_CONCURRENCY" \
    --keys "$BENCH_KEYS" --value-size "$BENCH_VALUE_SIZE" --batch-size "$BENCH_BATCH" \
    --duration "$BENCH_DURATION" --warmup "$BENCH_WARMUP" "$@" >"$RAW/$name.json"
  snapshot >"$RAW/$name.after"
  redis-cli -p "$REDIS_PORT" INFO commandstats >"$RAW/$name.cmdstats.after"
}

log "prefilling $BENCH_KEYS keys through the service"
"$LOADGEN" --target "http://127.0.0.1:$SVC_PORT" --json --prefill --requests 1 --warmup 0s \
  --keys "$BENCH_KEYS" --value-size "$BENCH_VALUE_SIZE" >"$OUT/prefill.json"

for rep in $(seq 1 "$BENCH_REPS"); do
  rb "direct-unary-$rep" "$REDIS_PORT" 1 "$BENCH_UNARY_REQUESTS"
  rb "proxy-unary-$rep" "$PROXY_PORT" 1 "$BENCH_UNARY_REQUESTS"
  lg "service-put-$rep" put=1
  lg "service-get-$rep" get=1
  rb "direct-pipelined-$rep" "$REDIS_PORT" "$BENCH_PIPELINE" "$BENCH_PIPELINED_REQUESTS"
  rb "proxy-pipelined-$rep" "$PROXY_PORT" "$BENCH_PIPELINE" "$BENCH_PIPELINED_REQUESTS"
  lg "service-batchput-$rep" batch-put=1
  lg "service-batchget-$rep" batch-get=1
done

# Half of the best closed-loop rate (median over the repetitions).
half_rate() {
  python3 - "$RAW" "$1" <<'EOF'
import json, statistics, sys, glob
raw, op = sys.argv[1], sys.argv[2]
rates = [json.load(open(p))["ops_per_s"] for p in glob.glob(f"{raw}/service-{op}-[0-9]*.json")]
print(max(1.0, round(statistics.median(rates) / 2)))
EOF
}
GET_HALF=$(half_rate get)
PUT_HALF=$(half_rate put)
for rep in $(seq 1 "$BENCH_REPS"); do
  lg "service-get-half-$rep" get=1 --rate "$GET_HALF"
  lg "service-put-half-$rep" put=1 --rate "$PUT_HALF"
done

# The same rates with the load generator on a core of its own (CPU 0) and the
# service and Redis on the others: what a client on another host would see.
# On two shared cores the three programs otherwise queue behind each other
# for a CPU, which is most of the tail above. Skipped (and reported as not
# run) on a single CPU or without taskset.
NPROC=$(nproc)
if [ "$NPROC" -ge 2 ] && command -v taskset >/dev/null; then
  pin_servers() {
    local pid
    for pid in "$SVC_PID" "$REDIS_PID"; do taskset -a -pc "$1" "$pid" >/dev/null; done
  }
  pin_servers "1-$((NPROC - 1))"
  for rep in $(seq 1 "$BENCH_REPS"); do
    LG_WRAP="taskset -c 0" lg "service-get-pinned-$rep" get=1 --rate "$GET_HALF"
    LG_WRAP="taskset -c 0" lg "service-put-pinned-$rep" put=1 --rate "$PUT_HALF"
  done
  pin_servers "0-$((NPROC - 1))"
fi

echo "load_after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
# VmHWM is the service's peak RSS over the whole run.
snapshot >"$OUT/final.snapshot"

mkdir -p "$BENCH_DOCS"
python3 bench/report.py "$OUT" "$BENCH_DOCS"
log "wrote $BENCH_DOCS/benchmarks.md and $BENCH_DOCS/benchmarks.svg"
