#!/usr/bin/env bash
# One-run comparison of state-service with Redis itself and with what users
# would pick instead (issues 5 and 16).
#
# On this machine and in one run: starts a private redis-server (no
# persistence), nutcracker (twemproxy) in front of it on another port, and the
# release build of state-service against the same Redis. Then, at the same
# concurrency, key space and value size, it runs, each BENCH_REPS times and
# interleaved so that background load drifts over all of them alike:
#
#   - redis-benchmark direct and through twemproxy: single GET/SET (against
#     Get/Put) and pipelined -P 16 GET/SET (against BatchGet/BatchPut of 100);
#   - Dapr's versioned write (the `setQuery` Lua script of its Redis state
#     store) with `redis-benchmark … EVALSHA`, single and -P 16, on the same
#     Redis: Redis CPU per write against the service's Put;
#   - `SCAN 0 MATCH key:* COUNT <batch>` with redis-benchmark against List
#     (keys only, and with values); twemproxy does not support SCAN;
#   - state-loadgen against the service: Put, Get, List, List with values,
#     BatchPut, BatchGet.
#
# Around every run it reads INFO commandstats and the CPU counters of the
# service, Redis and twemproxy; at the end it measures p99 at half of the
# service's best Get/Put rate (fixed-rate mode). bench/report.py turns the raw
# results into docs/benchmarks.md and docs/benchmarks.svg.
#
# It never touches a Redis it did not start: every server runs on a free
# loopback port and is killed on exit. Raw results go to $BENCH_OUT (default
# bench/out/, ignored by git). Runtime with the defaults: about 12 minutes
# (20 with BENCH_BEFORE_BIN, 16 with BENCH_CLUSTER=1). Publish only numbers
# from a quiet machine (load average well below 1 at the start): on shared
# cores every ratio moves by ±10 % or more.
#
# Dapr's script is third-party code (dapr/components-contrib, Apache 2.0) and
# is not in this repository. To measure its exact text, fetch it and point
# DAPR_SET_LUA at the file:
#
#   curl -fsSL https://raw.githubusercontent.com/dapr/components-contrib/00d849260c1aa97e005157a4b08f946a964d656c/state/redis/redis.go \
#     | python3 -c 'import re,sys; print(re.search(r"setDefaultQuery = `(.*?)`", sys.stdin.read(), re.S).group(1))' \
#     >/tmp/dapr_set.lua
#   DAPR_SET_LUA=/tmp/dapr_set.lua bench/compare.sh
#
# (any release whose state/redis/redis.go defines `setDefaultQuery` works the
# same way). Without it the Dapr rows run bench/lua-lab/lua/dapr_standin.lua,
# written for this repository, which issues the same Redis commands in the
# same order with the same arguments (the Lua lab measured 42.1 k instructions
# per call for it and 42.0 k for Dapr's text) and is labelled "stand-in" in
# the report. Either way it is called as Dapr calls it for a last-write Set:
# `EVALSHA <sha> 1 <key> 0 <value> 1`, on keys `dapr:key:<n>` prefilled as
# Dapr hashes.
#
# Knobs (environment):
#   BENCH_REPS=3                repetitions of every measurement (median taken)
#   BENCH_DURATION=5s           measured time of each state-loadgen run
#   BENCH_WARMUP=1s             unmeasured warm-up before each state-loadgen run
#   BENCH_UNARY_REQUESTS=300000 redis-benchmark -n for single GET/SET
#   BENCH_PIPELINED_REQUESTS=2000000  redis-benchmark -n for -P runs
#   BENCH_DAPR_REQUESTS=200000  redis-benchmark -n for the single Dapr EVALSHA
#   BENCH_DAPR_PIPELINED_REQUESTS=600000  … and for Dapr at -P 16
#   BENCH_SCAN_REQUESTS=200000  redis-benchmark -n for SCAN
#   BENCH_CONCURRENCY=50        clients (redis-benchmark -c) / in-flight RPCs
#   BENCH_CONNECTIONS=8         HTTP/2 connections of state-loadgen
#   BENCH_KEYS=100000           key space (redis-benchmark -r)
#   BENCH_VALUE_SIZE=64         value bytes (redis-benchmark -d)
#   BENCH_PIPELINE=16           redis-benchmark -P
#   BENCH_BATCH=100             keys per BatchGet/BatchPut and List page size
#   BENCH_LATENCY=1             0: skip the fixed-rate (half-load) runs
#   BENCH_DOCS=docs             where benchmarks.md and benchmarks.svg go
#   BENCH_OUT=bench/out         raw results (emptied first)
#   BENCH_SERVICE_ARGS=""       extra flags for state-service (e.g. pool size)
#   BENCH_SERVICE_BIN=""        a prebuilt state-service to measure instead of
#                               building this tree's (state-loadgen is always
#                               built from this tree)
#   BENCH_BEFORE_BIN=""         another state-service binary (e.g. main before
#                               a change) measured in the same run, interleaved
#                               with the first, on its own key prefix; the
#                               report adds a before/after table
#   BENCH_CLUSTER=0             1: also a 3-master Redis Cluster, the service
#                               over it (--redis-mode cluster) against
#                               `redis-benchmark --cluster` on the same cluster
#   DAPR_SET_LUA=""             Dapr's exact setQuery text (see above)
#   BENCH_WATCH=0               1: also the Watch rows (bench/watch.sh): Put and
#                               BatchPut with the change feed off / on / on with
#                               100 watchers, event latency, RSS of idle
#                               watchers; written to $BENCH_OUT/watch.md
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BENCH_REPS=${BENCH_REPS:-3}
BENCH_DURATION=${BENCH_DURATION:-5s}
BENCH_WARMUP=${BENCH_WARMUP:-1s}
BENCH_UNARY_REQUESTS=${BENCH_UNARY_REQUESTS:-300000}
BENCH_PIPELINED_REQUESTS=${BENCH_PIPELINED_REQUESTS:-2000000}
BENCH_DAPR_REQUESTS=${BENCH_DAPR_REQUESTS:-200000}
BENCH_DAPR_PIPELINED_REQUESTS=${BENCH_DAPR_PIPELINED_REQUESTS:-600000}
BENCH_SCAN_REQUESTS=${BENCH_SCAN_REQUESTS:-200000}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-50}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-8}
BENCH_KEYS=${BENCH_KEYS:-100000}
BENCH_VALUE_SIZE=${BENCH_VALUE_SIZE:-64}
BENCH_PIPELINE=${BENCH_PIPELINE:-16}
BENCH_BATCH=${BENCH_BATCH:-100}
BENCH_LATENCY=${BENCH_LATENCY:-1}
BENCH_DOCS=${BENCH_DOCS:-docs}
BENCH_OUT=${BENCH_OUT:-bench/out}
BENCH_SERVICE_ARGS=${BENCH_SERVICE_ARGS:-}
BENCH_SERVICE_BIN=${BENCH_SERVICE_BIN:-}
BENCH_BEFORE_BIN=${BENCH_BEFORE_BIN:-}
BENCH_CLUSTER=${BENCH_CLUSTER:-0}
BENCH_WATCH=${BENCH_WATCH:-0}
DAPR_SET_LUA=${DAPR_SET_LUA:-}

case $BENCH_OUT in /*) OUT=$BENCH_OUT ;; *) OUT=$ROOT/$BENCH_OUT ;; esac
RAW=$OUT/raw
rm -rf "$OUT"
mkdir -p "$RAW" "$OUT/redis"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

for bin in "$BENCH_SERVICE_BIN" "$BENCH_BEFORE_BIN"; do
  [ -z "$bin" ] || [ -x "$bin" ] || die "$bin is not an executable state-service"
done
if [ -n "$DAPR_SET_LUA" ]; then
  [ -r "$DAPR_SET_LUA" ] || die "DAPR_SET_LUA=$DAPR_SET_LUA: cannot read it"
  # What makes it Dapr's versioned write; a wrong file would measure nothing.
  for cmd in HGET HSET HINCRBY; do
    grep -q "$cmd" "$DAPR_SET_LUA" || die "DAPR_SET_LUA=$DAPR_SET_LUA has no $cmd: not Dapr's setQuery"
  done
  DAPR_LUA=$DAPR_SET_LUA
  DAPR_LABEL="Dapr setQuery"
  DAPR_SOURCE="Dapr's setQuery text from $DAPR_SET_LUA"
else
  DAPR_LUA=$ROOT/bench/lua-lab/lua/dapr_standin.lua
  DAPR_LABEL="Dapr stand-in"
  DAPR_SOURCE="bench/lua-lab/lua/dapr_standin.lua (same commands in the same order as Dapr's setQuery; DAPR_SET_LUA not given)"
fi

# --- tools -----------------------------------------------------------------
# Debian installs nutcracker to /usr/sbin, which is not on every PATH.
PATH=$PATH:/usr/sbin
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v nutcracker >/dev/null 2>&1 || missing+=(nutcracker)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt-get)"
  # The packages would start their own redis-server / nutcracker on the
  # default ports where the init system lets them; ours run below on private
  # ports, so a policy-rc.d forbids those starts for the install.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
  fi
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  [ -z "$policy" ] || as_root rm -f "$policy"
  command -v nutcracker >/dev/null 2>&1 || die "nutcracker is still not on PATH after apt-get install"
fi

if [ -n "$BENCH_SERVICE_BIN" ]; then
  log "building state-loadgen (release); measuring $BENCH_SERVICE_BIN"
  cargo build --release --locked -p state-loadgen >&2
  SVC_BIN=$BENCH_SERVICE_BIN
else
  log "building state-service and state-loadgen (release)"
  cargo build --release --locked -p state-service --bin state-service -p state-loadgen --bin state-loadgen >&2
  SVC_BIN=$ROOT/target/release/state-service
fi
LOADGEN=$ROOT/target/release/state-loadgen
if [ "$BENCH_CLUSTER" = 1 ] && ! "$SVC_BIN" --help 2>/dev/null | grep -q -- '--redis-mode'; then
  die "BENCH_CLUSTER=1 needs a state-service with --redis-mode (Redis Cluster support); $SVC_BIN has none"
fi

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

# start_service BIN REDIS_URL LOG [flags...]: sets STARTED_PORT and STARTED_PID.
start_service() {
  local bin=$1 url=$2 logf=$3 port i
  shift 3
  port=$(free_port)
  # shellcheck disable=SC2086 # BENCH_SERVICE_ARGS is a list of flags
  RUST_LOG=warn "$bin" --listen "127.0.0.1:$port" --redis-url "$url" "$@" $BENCH_SERVICE_ARGS \
    >"$logf" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  wait_port "$port" || die "state-service ($bin) did not listen; see $logf"
  # SERVING once the service has reached Redis.
  for i in $(seq 1 50); do
    "$bin" health --addr "127.0.0.1:$port" --timeout 1s >/dev/null 2>&1 && break
    [ "$i" = 50 ] && die "state-service ($bin) did not become SERVING; see $logf"
    sleep 0.2
  done
  STARTED_PORT=$port
}

start_service "$SVC_BIN" "redis://127.0.0.1:$REDIS_PORT" "$OUT/service.log"
SVC_PORT=$STARTED_PORT
SVC_PID=$STARTED_PID
# shellcheck disable=SC2034 # read by snapshot() through the variable name
SNAP_SVC_PID=$SVC_PID
BEFORE_PORT=""
if [ -n "$BENCH_BEFORE_BIN" ]; then
  # Its own key prefix: the two services never read each other's keys.
  start_service "$BENCH_BEFORE_BIN" "redis://127.0.0.1:$REDIS_PORT" \
    "$OUT/service-before.log" --key-prefix before
  BEFORE_PORT=$STARTED_PORT
  BEFORE_PID=$STARTED_PID
fi

# A Redis Cluster of 3 masters without replicas, each on a free data port and
# a free bus port (cluster-port, Redis ≥ 7.0).
CLUSTER_PORTS=()
CLUSTER_PIDS=()
if [ "$BENCH_CLUSTER" = 1 ]; then
  for n in 1 2 3; do
    port=$(free_port)
    bus=$(free_port)
    mkdir -p "$OUT/cluster/$n"
    redis-server --port "$port" --cluster-port "$bus" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file "$OUT/cluster/$n/nodes.conf" \
      --dir "$OUT/cluster/$n" --logfile "$OUT/cluster/$n/redis.log" &
    CLUSTER_PIDS+=($!)
    PIDS+=($!)
    CLUSTER_PORTS+=("$port")
  done
  for port in "${CLUSTER_PORTS[@]}"; do wait_port "$port"; done
  redis-cli --cluster create "${CLUSTER_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    >"$OUT/cluster/create.log" 2>&1 || die "redis-cli --cluster create failed; see $OUT/cluster/create.log"
  for i in $(seq 1 100); do
    ok=0
    for port in "${CLUSTER_PORTS[@]}"; do
      redis-cli -p "$port" CLUSTER INFO | grep -q '^cluster_state:ok' && ok=$((ok + 1))
    done
    [ "$ok" = 3 ] && break
    [ "$i" = 100 ] && die "the cluster did not reach cluster_state:ok in 20 s"
    sleep 0.2
  done
  seeds=$(printf 'redis://127.0.0.1:%s,' "${CLUSTER_PORTS[@]}")
  start_service "$SVC_BIN" "${seeds%,}" "$OUT/service-cluster.log" --redis-mode cluster
  CSVC_PORT=$STARTED_PORT
  CSVC_PID=$STARTED_PID
fi

CLK_TCK=$(getconf CLK_TCK)
# CPU ticks (user + system) of processes, summed.
cpu_ticks() {
  local pid sum=0 t
  for pid in "$@"; do
    t=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    sum=$((sum + t))
  done
  echo "$sum"
}
# One line: service, Redis and proxy CPU ticks, service VmRSS and VmHWM (kB).
# SNAP_SVC_PID / SNAP_REDIS_PIDS say which service and which Redis (one
# server, or every master of the cluster) a run measures.
SNAP_REDIS_PIDS=$REDIS_PID
snapshot() {
  # shellcheck disable=SC2086 # a list of pids
  printf '%s %s %s %s %s\n' "$(cpu_ticks "$SNAP_SVC_PID")" "$(cpu_ticks $SNAP_REDIS_PIDS)" \
    "$(cpu_ticks "$PROXY_PID")" \
    "$(awk '/^VmRSS/{print $2}' "/proc/$SNAP_SVC_PID/status")" \
    "$(awk '/^VmHWM/{print $2}' "/proc/$SNAP_SVC_PID/status")"
}
# INFO commandstats of the Redis a run measures (every master, concatenated).
SNAP_REDIS_PORTS=$REDIS_PORT
cmdstats() {
  local port
  for port in $SNAP_REDIS_PORTS; do redis-cli -p "$port" INFO commandstats; done
}
use_standalone() { SNAP_SVC_PID=$SVC_PID; SNAP_REDIS_PIDS=$REDIS_PID; SNAP_REDIS_PORTS=$REDIS_PORT; }
use_before() { SNAP_SVC_PID=$BEFORE_PID; SNAP_REDIS_PIDS=$REDIS_PID; SNAP_REDIS_PORTS=$REDIS_PORT; }
use_cluster() {
  SNAP_SVC_PID=$CSVC_PID
  SNAP_REDIS_PIDS="${CLUSTER_PIDS[*]}"
  SNAP_REDIS_PORTS="${CLUSTER_PORTS[*]}"
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
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
  echo "service: ${BENCH_SERVICE_BIN:-this tree}"
  echo "before: ${BENCH_BEFORE_BIN}"
  echo "dapr_label: $DAPR_LABEL"
  echo "dapr_source: $DAPR_SOURCE"
  echo "cluster: $BENCH_CLUSTER"
  echo "clk_tck: $CLK_TCK"
} >"$OUT/machine.txt"
{
  printf 'BENCH_REPS=%s BENCH_DURATION=%s BENCH_WARMUP=%s ' "$BENCH_REPS" "$BENCH_DURATION" "$BENCH_WARMUP"
  printf 'BENCH_UNARY_REQUESTS=%s BENCH_PIPELINED_REQUESTS=%s ' "$BENCH_UNARY_REQUESTS" "$BENCH_PIPELINED_REQUESTS"
  printf 'BENCH_DAPR_REQUESTS=%s BENCH_DAPR_PIPELINED_REQUESTS=%s BENCH_SCAN_REQUESTS=%s ' \
    "$BENCH_DAPR_REQUESTS" "$BENCH_DAPR_PIPELINED_REQUESTS" "$BENCH_SCAN_REQUESTS"
  printf 'BENCH_CONCURRENCY=%s BENCH_CONNECTIONS=%s BENCH_KEYS=%s ' "$BENCH_CONCURRENCY" "$BENCH_CONNECTIONS" "$BENCH_KEYS"
  printf 'BENCH_VALUE_SIZE=%s BENCH_PIPELINE=%s BENCH_BATCH=%s' "$BENCH_VALUE_SIZE" "$BENCH_PIPELINE" "$BENCH_BATCH"
  [ "$BENCH_LATENCY" = 1 ] || printf ' BENCH_LATENCY=%s' "$BENCH_LATENCY"
  [ "$BENCH_CLUSTER" = 1 ] && printf ' BENCH_CLUSTER=1'
  [ -n "$BENCH_SERVICE_ARGS" ] && printf ' BENCH_SERVICE_ARGS=%q' "$BENCH_SERVICE_ARGS"
  [ -n "$BENCH_SERVICE_BIN" ] && printf ' BENCH_SERVICE_BIN=%q' "$BENCH_SERVICE_BIN"
  [ -n "$BENCH_BEFORE_BIN" ] && printf ' BENCH_BEFORE_BIN=%q' "$BENCH_BEFORE_BIN"
  [ -n "$DAPR_SET_LUA" ] && printf ' DAPR_SET_LUA=%q' "$DAPR_SET_LUA"
  printf ' bench/compare.sh\n'
} >"$OUT/command.txt"

# --- runs ------------------------------------------------------------------
# rb NAME PORT PIPELINE REQUESTS [redis-benchmark flags or command...]
# Without a command: -t set,get.
rb() {
  local name=$1 port=$2 pipeline=$3 requests=$4
  shift 4
  [ $# -gt 0 ] || set -- -t set,get
  log "$name"
  cmdstats >"$RAW/$name.cmdstats.before" 2>/dev/null || true
  snapshot >"$RAW/$name.before"
  # Through twemproxy redis-benchmark warns that it cannot read CONFIG: harmless.
  # `time` records the client's own CPU (user and system seconds), to set
  # against state-loadgen's.
  local TIMEFORMAT='%U %S'
  { time redis-benchmark -h 127.0.0.1 -p "$port" -c "$BENCH_CONCURRENCY" -d "$BENCH_VALUE_SIZE" \
    -r "$BENCH_KEYS" -n "$requests" -P "$pipeline" --csv "$@" \
    2>"$RAW/$name.err" >"$RAW/$name.csv"; } 2>"$RAW/$name.time"
  snapshot >"$RAW/$name.after"
  cmdstats >"$RAW/$name.cmdstats.after" 2>/dev/null || true
  echo "$requests" >"$RAW/$name.requests"
}

# lg NAME TARGET_PORT MIX [extra flags...]
lg() {
  local name=$1 port=$2 mix=$3
  shift 3
  log "$name"
  cmdstats >"$RAW/$name.cmdstats.before"
  snapshot >"$RAW/$name.before"
  # shellcheck disable=SC2086 # LG_WRAP is a command prefix (taskset …) or empty
  ${LG_WRAP:-} "$LOADGEN" --target "http://127.0.0.1:$port" --json --mix "$mix" \
    --connections "$BENCH_CONNECTIONS" --concurrency "$BENCH_CONCURRENCY" \
    --keys "$BENCH_KEYS" --value-size "$BENCH_VALUE_SIZE" --batch-size "$BENCH_BATCH" \
    --duration "$BENCH_DURATION" --warmup "$BENCH_WARMUP" "$@" >"$RAW/$name.json"
  snapshot >"$RAW/$name.after"
  cmdstats >"$RAW/$name.cmdstats.after"
}

prefill() {
  log "prefilling $BENCH_KEYS keys through the service on port $1"
  "$LOADGEN" --target "http://127.0.0.1:$1" --json --prefill --requests 1 --warmup 0s \
    --keys "$BENCH_KEYS" --value-size "$BENCH_VALUE_SIZE" >"$OUT/prefill-$2.json"
}
prefill "$SVC_PORT" service
[ -z "$BEFORE_PORT" ] || prefill "$BEFORE_PORT" before
[ "$BENCH_CLUSTER" = 1 ] && prefill "$CSVC_PORT" cluster

# The keys redis-benchmark's GET/SET and SCAN use (key:<12 digits>), so that
# GET finds values and SCAN lists as many keys as the service's List.
log "prefilling $BENCH_KEYS keys for redis-benchmark and $BENCH_KEYS Dapr hashes"
python3 - "$BENCH_KEYS" "$BENCH_VALUE_SIZE" <<'EOF' | redis-cli -p "$REDIS_PORT" --pipe >"$OUT/prefill-redis.log"
import sys
keys, size = int(sys.argv[1]), int(sys.argv[2])
value = b"x" * size
out = sys.stdout.buffer
def cmd(*args):
    out.write(b"*%d\r\n" % len(args))
    for a in args:
        out.write(b"$%d\r\n%s\r\n" % (len(a), a))
for n in range(keys):
    k = b"%012d" % n
    cmd(b"SET", b"key:" + k, value)
    # What Dapr's state store leaves after a first write: a hash with the
    # data and version 1 (no first-write field for last-write Sets).
    cmd(b"HSET", b"dapr:key:" + k, b"data", value, b"version", b"1")
EOF
DAPR_SHA=$(redis-cli -p "$REDIS_PORT" SCRIPT LOAD "$(cat "$DAPR_LUA")")
[[ $DAPR_SHA =~ ^[0-9a-f]{40}$ ]] || die "SCRIPT LOAD of $DAPR_LUA failed: $DAPR_SHA"
DAPR_VALUE=$(head -c "$BENCH_VALUE_SIZE" </dev/zero | tr '\0' x)
# Keys the SCAN baseline returns per call (cursor 0 always scans the same
# buckets, so every call returns the same number).
SCAN_KEYS_PER_CALL=$(redis-cli -p "$REDIS_PORT" --no-raw SCAN 0 MATCH 'key:*' COUNT "$BENCH_BATCH" \
  | grep -c '"key:' || true)
echo "scan_keys_per_call: $SCAN_KEYS_PER_CALL" >>"$OUT/machine.txt"

for rep in $(seq 1 "$BENCH_REPS"); do
  use_standalone
  rb "direct-unary-$rep" "$REDIS_PORT" 1 "$BENCH_UNARY_REQUESTS"
  rb "proxy-unary-$rep" "$PROXY_PORT" 1 "$BENCH_UNARY_REQUESTS"
  rb "dapr-unary-$rep" "$REDIS_PORT" 1 "$BENCH_DAPR_REQUESTS" \
    EVALSHA "$DAPR_SHA" 1 'dapr:key:__rand_int__' 0 "$DAPR_VALUE" 1
  lg "service-put-$rep" "$SVC_PORT" put=1
  lg "service-get-$rep" "$SVC_PORT" get=1
  lg "service-list-$rep" "$SVC_PORT" list=1
  lg "service-listvalues-$rep" "$SVC_PORT" list=1 --list-values
  if [ -n "$BEFORE_PORT" ]; then
    use_before
    lg "before-put-$rep" "$BEFORE_PORT" put=1
    lg "before-get-$rep" "$BEFORE_PORT" get=1
    lg "before-list-$rep" "$BEFORE_PORT" list=1
    lg "before-listvalues-$rep" "$BEFORE_PORT" list=1 --list-values
    use_standalone
  fi
  rb "direct-scan-$rep" "$REDIS_PORT" 1 "$BENCH_SCAN_REQUESTS" SCAN 0 MATCH 'key:*' COUNT "$BENCH_BATCH"
  rb "direct-pipelined-$rep" "$REDIS_PORT" "$BENCH_PIPELINE" "$BENCH_PIPELINED_REQUESTS"
  rb "proxy-pipelined-$rep" "$PROXY_PORT" "$BENCH_PIPELINE" "$BENCH_PIPELINED_REQUESTS"
  rb "dapr-pipelined-$rep" "$REDIS_PORT" "$BENCH_PIPELINE" "$BENCH_DAPR_PIPELINED_REQUESTS" \
    EVALSHA "$DAPR_SHA" 1 'dapr:key:__rand_int__' 0 "$DAPR_VALUE" 1
  lg "service-batchput-$rep" "$SVC_PORT" batch-put=1
  lg "service-batchget-$rep" "$SVC_PORT" batch-get=1
  if [ -n "$BEFORE_PORT" ]; then
    use_before
    lg "before-batchput-$rep" "$BEFORE_PORT" batch-put=1
    lg "before-batchget-$rep" "$BEFORE_PORT" batch-get=1
  fi
  if [ "$BENCH_CLUSTER" = 1 ]; then
    use_cluster
    rb "cluster-unary-$rep" "${CLUSTER_PORTS[0]}" 1 "$BENCH_UNARY_REQUESTS" --cluster -t set,get
    lg "cluster-put-$rep" "$CSVC_PORT" put=1
    lg "cluster-get-$rep" "$CSVC_PORT" get=1
    rb "cluster-pipelined-$rep" "${CLUSTER_PORTS[0]}" "$BENCH_PIPELINE" "$BENCH_PIPELINED_REQUESTS" \
      --cluster -t set,get
    lg "cluster-batchput-$rep" "$CSVC_PORT" batch-put=1
    lg "cluster-batchget-$rep" "$CSVC_PORT" batch-get=1
  fi
done
use_standalone

# Half of the best closed-loop rate (median over the repetitions).
half_rate() {
  python3 - "$RAW" "$1" <<'EOF'
import json, statistics, sys, glob
raw, op = sys.argv[1], sys.argv[2]
rates = [json.load(open(p))["ops_per_s"] for p in glob.glob(f"{raw}/service-{op}-[0-9]*.json")]
print(max(1.0, round(statistics.median(rates) / 2)))
EOF
}
if [ "$BENCH_LATENCY" = 1 ]; then
  GET_HALF=$(half_rate get)
  PUT_HALF=$(half_rate put)
  for rep in $(seq 1 "$BENCH_REPS"); do
    lg "service-get-half-$rep" "$SVC_PORT" get=1 --rate "$GET_HALF"
    lg "service-put-half-$rep" "$SVC_PORT" put=1 --rate "$PUT_HALF"
  done

  # The same rates with the load generator on a core of its own (CPU 0) and
  # the service and Redis on the others: what a client on another host would
  # see. On two shared cores the three programs otherwise queue behind each
  # other for a CPU, which is most of the tail above. Skipped (and reported as
  # not run) on a single CPU or without taskset.
  NPROC=$(nproc)
  if [ "$NPROC" -ge 2 ] && command -v taskset >/dev/null; then
    pin_servers() {
      local pid
      for pid in "$SVC_PID" "$REDIS_PID"; do taskset -a -pc "$1" "$pid" >/dev/null; done
    }
    pin_servers "1-$((NPROC - 1))"
    for rep in $(seq 1 "$BENCH_REPS"); do
      LG_WRAP="taskset -c 0" lg "service-get-pinned-$rep" "$SVC_PORT" get=1 --rate "$GET_HALF"
      LG_WRAP="taskset -c 0" lg "service-put-pinned-$rep" "$SVC_PORT" put=1 --rate "$PUT_HALF"
    done
    pin_servers "0-$((NPROC - 1))"
  fi
fi

echo "load_after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
# VmHWM is the service's peak RSS over the whole run.
snapshot >"$OUT/final.snapshot"

if [ "$BENCH_WATCH" = 1 ]; then
  log "Watch rows: the change feed's cost to writers (bench/watch.sh)"
  BENCH_OUT=$OUT BENCH_SERVICE_BIN=$SVC_BIN BENCH_LOADGEN_BIN=$LOADGEN \
    BENCH_DURATION=$BENCH_DURATION BENCH_WARMUP=$BENCH_WARMUP \
    BENCH_CONCURRENCY=$BENCH_CONCURRENCY BENCH_CONNECTIONS=$BENCH_CONNECTIONS \
    BENCH_KEYS=$BENCH_KEYS BENCH_VALUE_SIZE=$BENCH_VALUE_SIZE BENCH_BATCH=$BENCH_BATCH \
    bench/watch.sh >"$OUT/watch.md"
fi

mkdir -p "$BENCH_DOCS"
python3 bench/report.py "$OUT" "$BENCH_DOCS"
log "wrote $BENCH_DOCS/benchmarks.md and $BENCH_DOCS/benchmarks.svg"
