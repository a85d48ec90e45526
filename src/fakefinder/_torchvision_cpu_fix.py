"""Make PyPI's CUDA-built torchvision importable beside a CPU-only torch.

torchvision wheels built for CUDA ship a `_C.so` that cannot load against a CPU torch; torchvision's
own import then fails because `torchvision::nms` is not a known operator. When (and only when) that
mismatch is detected, this module registers the `nms`/`qnms` schemas with a pure-torch CPU kernel
before torchvision is imported. On any matching install it does nothing.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

_applied = False


def _torchvision_built_for_cuda() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = version_file.read_text()
    except OSError:
        return False
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return bool(match and "+cu" in match.group(1))


def needs_fix() -> bool:
    """True when torch is a CPU build but the installed torchvision was compiled for CUDA."""
    import sys

    if "torchvision" in sys.modules:  # already imported: too late, or it worked
        return False
    import torch

    return torch.version.cuda is None and _torchvision_built_for_cuda()


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
        xx1 = torch.maximum(x1[index], x1[rest])
        yy1 = torch.maximum(y1[index], y1[rest])
        xx2 = torch.minimum(x2[index], x2[rest])
        yy2 = torch.minimum(y2[index], y2[rest])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[index] + areas[rest] - inter).clamp(min=1e-12)
        suppressed[rank + 1 :] |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def apply() -> bool:
    """Register the missing torchvision operators if needed. Returns True when it did."""
    global _applied
    if _applied or not needs_fix():
        return False
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define(
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    )
    library.impl("nms", _nms_cpu, "CPU")
    library.impl("qnms", _nms_cpu, "CPU")
    # keep the library object alive for the life of the process
    globals()["_library"] = library
    import torchvision.extension

    # torchvision.ops checks this flag before dispatching; the operators above now exist
    torchvision.extension._has_ops = lambda: True
    _applied = True
    return True
