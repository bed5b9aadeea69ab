#!/usr/bin/env bash
# Lua lab (issue 16): Redis CPU per call of write-script variants, on a
# private redis-server (free loopback port, never 6379), wall clock from
# INFO commandstats and instructions under callgrind. One command:
#
#   bench/lua-lab/run.sh                 # everything, ~30 min on 2 busy cores
#   bench/lua-lab/run.sh --only 'put_pre|SET \[' --reps 1 --instr-reps 1
#
# Dapr's versioned write (`setQuery` of components-contrib state/redis, Apache
# 2.0) is not shipped here: put its Lua text in a file and point DAPR_SET_LUA
# at it to get the "Dapr setQuery" rows; lua/dapr_standin.lua (same commands,
# same order) runs always. Results: bench/out/lua-lab/{table.md,results.json}.
set -euo pipefail
cd "$(dirname "$0")"
missing=()
for t in redis-server redis-cli redis-benchmark valgrind callgrind_control python3; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing redis-server redis-tools valgrind (missing: ${missing[*]})" >&2
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools valgrind python3 >/dev/null
fi
exec python3 lab.py "$@"
