#!/usr/bin/env bash
# The test suite: set up .venv, then pytest (offline, no ../shared needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
