#!/usr/bin/env bash
# The test suite: set up .venv, lint (ruff, rules in pyproject.toml), then pytest (offline, no
# ../shared needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# the web UI's tests drive Debian's headless Chromium through its driver (never a downloaded browser)
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver >/dev/null
fi
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
exec .venv/bin/python -m pytest "$@"
