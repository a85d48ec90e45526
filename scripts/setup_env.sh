#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with the pinned, tested packages.
# torch is pinned to the CPU build in the same pip call, so nothing pulls a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.fakefinder-installed"
want=$(cat requirements.txt pyproject.toml scripts/setup_env.sh | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }
pip_install -r requirements.txt
# facenet-pytorch (MTCNN, weights inside the wheel) declares torch<2.3 but runs on this torch
pip_install --no-deps facenet-pytorch==2.6.0
pip_install --no-deps -e .
echo "$want" > "$stamp"
