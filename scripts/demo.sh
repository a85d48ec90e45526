#!/usr/bin/env bash
# The main job end to end on generated data: set up .venv, then `fakefinder demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/fakefinder demo "$@"
