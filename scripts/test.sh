#!/usr/bin/env bash
# The test suite: set up .venv, lint (ruff, rules in pyproject.toml), build the docs strictly, then
# pytest (offline, no ../shared needed).
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
# the docs site, strictly: a broken link, a missing page or a bad snippet fails (docs/, mkdocs.yml)
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
exec .venv/bin/python -m pytest "$@"
