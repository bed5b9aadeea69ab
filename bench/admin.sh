#!/usr/bin/env bash
# Figures for the admin API and CLI (issue 15); a program that prints
# numbers, not a CI test (CI runs tests/admin.rs with 20,000 keys).
#
# Starts a private redis-server (no persistence) on a free loopback port and
# the release build of state-service against it, then:
#
#   1. fills tenant `big` with $KEYS keys (64-byte values, state-loadgen
#      --prefill) and exports it with `state-service export --file`: time,
#      keys/s, peak RSS of the CLI (/usr/bin/time) and of the service
#      (VmRSS sampled every 100 ms while the export runs);
#   2. imports that file into tenant `copy` (`--policy overwrite`): the same
#      figures;
#   3. fills tenant `victim` with $PURGE_KEYS keys and measures tenant
#      `other`'s latency at a fixed rate ($RATE req/s, get=80,put=20) over a
#      window as long as a purge takes, twice: alone, and while
#      `state-service purge --all-keys` deletes `victim` (refilled); prints
#      both p99s and how long the purge took.
#
# It never touches a Redis it did not start. Output: a summary on stdout,
# raw logs in $OUT (default bench/out/admin). Runtime with the defaults:
# about 3 minutes. Numbers from a shared 2-core machine are noisy: publish
# the median of a few runs from a quiet one.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000000}
PURGE_KEYS=${PURGE_KEYS:-100000}
RATE=${RATE:-2000}
OUT=${OUT:-bench/out/admin}
BIN=${BIN:-target/release/state-service}
LOADGEN=${LOADGEN:-target/release/state-loadgen}
mkdir -p "$OUT"

# Two commands: `--bin` would also filter the loadgen package's binaries.
[[ -x $BIN ]] || cargo build --release -p state-service --bin state-service
[[ -x $LOADGEN ]] || cargo build --release -p state-loadgen

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

RP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
  > "$OUT/redis.log" 2>&1 &
PIDS+=($!)
SP=$(free_port)
ADDR=127.0.0.1:$SP
# SERVICE_ARGS: extra server flags, e.g. "--admin-batch-keys 5000".
# shellcheck disable=SC2086
$BIN --listen "$ADDR" --redis-url "redis://127.0.0.1:$RP" ${SERVICE_ARGS:-} > "$OUT/service.log" 2>&1 &
SVC=$!
PIDS+=($SVC)
for _ in $(seq 100); do
  $BIN health --addr "$ADDR" > /dev/null 2>&1 && break
  sleep 0.1
done
$BIN health --addr "$ADDR" > /dev/null

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# Samples the service's RSS every 100 ms into $1 until killed.
sample_rss() {
  while true; do rss_kb "$SVC" >> "$1"; sleep 0.1; done
}

max_of() { sort -n "$1" | tail -1; }

# Runs the CLI under /usr/bin/time with the service's RSS sampled; prints
# "seconds cli_peak_kb service_peak_kb".
measure() {
  local name=$1; shift
  : > "$OUT/$name.rss"
  sample_rss "$OUT/$name.rss" &
  local sampler=$!
  /usr/bin/time -f '%e %M' -o "$OUT/$name.time" "$@" 2> "$OUT/$name.log"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  echo "$(cat "$OUT/$name.time") $(max_of "$OUT/$name.rss")"
}

echo "== filling tenant big with $KEYS keys"
$LOADGEN --target "http://$ADDR" --tenant big --keys "$KEYS" --value-size 64 \
  --prefill --requests 1 --warmup 0s > "$OUT/fill-big.log"
svc_idle=$(rss_kb "$SVC")

if [[ -z ${ONLY_PURGE:-} ]]; then
echo "== export"
read -r ex_s ex_cli ex_svc < <(measure export $BIN export --addr "$ADDR" --tenant big \
  --file "$WORK/big.ssx")
file_mb=$(( $(stat -c %s "$WORK/big.ssx") / 1024 / 1024 ))
tail -1 "$OUT/export.log"

echo "== import"
read -r im_s im_cli im_svc < <(measure import $BIN import --addr "$ADDR" --tenant copy \
  --policy overwrite --file "$WORK/big.ssx")
tail -1 "$OUT/import.log"
$BIN stats --addr "$ADDR" --tenant copy > "$OUT/stats-copy.txt"
else
  # ONLY_PURGE=1: the same keyspace (tenant copy as big as big), no figures.
  $LOADGEN --target "http://$ADDR" --tenant copy --keys "$KEYS" --value-size 64 \
    --prefill --requests 1 --warmup 0s > "$OUT/fill-copy.log"
  ex_s=1 ex_cli=0 ex_svc=0 im_s=1 im_cli=0 im_svc=0 file_mb=0
  echo "(export/import skipped)" > "$OUT/stats-copy.txt"
fi

echo "== purge of $PURGE_KEYS keys under another tenant's traffic ($RATE req/s)"
fill_victim() {
  $LOADGEN --target "http://$ADDR" --tenant victim --keys "$PURGE_KEYS" --value-size 64 \
    --prefill --requests 1 --warmup 0s > "$OUT/fill-victim.log"
}
# First alone, to learn how long a purge takes; then the other tenant's
# latency is measured over a window of that length, alone and with a purge.
fill_victim
read -r pu_alone_s _ _ < <(measure purge-alone $BIN purge --addr "$ADDR" --tenant victim --all-keys)
window_ms=$(python3 -c "print(max(1000, int($pu_alone_s * 1000)))")
other() {
  $LOADGEN --target "http://$ADDR" --tenant other --keys 10000 --value-size 64 \
    --mix get=80,put=20 --rate "$RATE" --concurrency 32 --duration "${window_ms}ms" \
    --warmup 1s --json
}
other > "$OUT/other-alone.json"
fill_victim
other > "$OUT/other-during-purge.json" &
LG=$!
# The loadgen warms up for 1 s before measuring.
sleep 1
read -r pu_s pu_cli pu_svc < <(measure purge $BIN purge --addr "$ADDR" --tenant victim --all-keys)
wait $LG
tail -1 "$OUT/purge.log"

p99() {
  python3 -c 'import json,sys; l=json.load(open(sys.argv[1]))["latency_us"]; print("p99 %s µs, p99.9 %s µs, max %s µs" % (l["p99"], l["p999"], l["max"]))' "$1"
}
rate_held() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["rate"]; print(r and r.get("held"))' "$1"; }

cat <<EOF

keys                      $KEYS (64-byte values), file $file_mb MiB
service RSS, idle         $(( svc_idle / 1024 )) MiB (after filling)
export                    ${ex_s} s, $(python3 -c "print(round($KEYS/$ex_s))") keys/s; CLI peak RSS $(( ex_cli / 1024 )) MiB, service peak RSS $(( ex_svc / 1024 )) MiB
import (overwrite)        ${im_s} s, $(python3 -c "print(round($KEYS/$im_s))") keys/s; CLI peak RSS $(( im_cli / 1024 )) MiB, service peak RSS $(( im_svc / 1024 )) MiB
copy                      $(cat "$OUT/stats-copy.txt")
purge                     $PURGE_KEYS keys in ${pu_alone_s} s alone ($(python3 -c "print(round($PURGE_KEYS/$pu_alone_s))") keys/s), ${pu_s} s under the other tenant's load
other tenant, alone       $(p99 "$OUT/other-alone.json") (rate held: $(rate_held "$OUT/other-alone.json"))
other tenant, with purge  $(p99 "$OUT/other-during-purge.json") over a ${window_ms} ms window during the purge (rate held: $(rate_held "$OUT/other-during-purge.json"))
EOF
