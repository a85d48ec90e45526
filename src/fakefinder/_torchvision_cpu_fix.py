"""Make PyPI's CUDA-built torchvision importable beside a CPU-only torch.

torchvision wheels built for CUDA ship a `_C.so` that cannot load against a CPU torch; importing
torchvision (and so timm) then fails because the `torchvision::nms` operator is unknown. `install()`
puts a tiny import hook in front of torchvision's import. When torchvision is first imported and
(only when) torch is a CPU build while torchvision was compiled for CUDA, the hook registers the
`nms`/`qnms` schemas with a pure-torch CPU kernel and marks torchvision's ops as available. On any
matching install it does nothing. `import fakefinder` installs it; so does the `.pth` file that
scripts/setup_env.sh writes into the project's venv.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
from pathlib import Path

_state: dict[str, object] = {}


def _torchvision_built_for_cuda(spec) -> bool:
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", version_file.read_text())
    except OSError:
        return False
    return bool(match and "+cu" in match.group(1))


def _nms_cpu(boxes, scores, iou_threshold: float):
    import torch

    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for rank, index in enumerate(order.tolist()):
        if suppressed[rank]:
            continue
        keep.append(index)
        rest = order[rank + 1 :]
        inter = (torch.minimum(x2[index], x2[rest]) - torch.maximum(x1[index], x1[rest])).clamp(min=0) * (
            torch.minimum(y2[index], y2[rest]) - torch.maximum(y1[index], y1[rest])
        ).clamp(min=0)
        iou = inter / (areas[index] + areas[rest] - inter).clamp(min=1e-12)
        suppressed[rank + 1 :] |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def _register_ops() -> None:
    if "library" in _state:
        return
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")
    for name in ("nms", "qnms"):
        library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.impl(name, _nms_cpu, "CPU")
    _state["library"] = library  # the registration lives as long as this object


class _PatchedLoader(importlib.abc.Loader):
    """Runs torchvision's own loader, then tells torchvision.ops that its operators exist."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        uninstall()
        self._loader.exec_module(module)
        extension = sys.modules.get("torchvision.extension")
        if extension is not None:
            extension._has_ops = lambda: True
        _state["applied"] = True


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """Stays armed until torchvision is really imported: libraries probe with
    `importlib.util.find_spec("torchvision")` first (transformers does), which must not disarm it."""

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not _torchvision_built_for_cuda(spec):
            return spec
        import torch

        if torch.version.cuda is not None:  # a CUDA torch loads the CUDA torchvision fine
            uninstall()
            return spec
        _register_ops()
        spec.loader = _PatchedLoader(spec.loader)
        return spec


def install() -> None:
    """Arm the hook (cheap, imports nothing); a no-op once torchvision is imported."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionHook())


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionHook)]


def applied() -> bool:
    """True when this process needed (and got) the fix."""
    return bool(_state.get("applied"))
