"""Where a timm-backbone network looked: a heatmap per crop, float32 in [0, 1] at the crop's size.

A detector with a mask head draws its predicted manipulation mask (the head's probabilities, so 0.8
means "probably changed" on every crop); any other network, and every N-class classifier, draws a
class-activation map of the logit asked for (captum's Grad-CAM on the backbone's last feature map,
rectified, each map scaled to peak at 1). With the artifact's mirror test-time augmentation, the
mirrored image's map is flipped back and averaged in, as its score is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fakefinder.tasks.classification.networks import Detector, MirrorAverage

METHODS = ("auto", "mask", "cam")
RECORD = "localiser.json"  # in a model artifact: its heatmaps' check on validation (which method, how good)


def read_record(artifact_path: Path) -> dict | None:
    """The artifact's validation record of its heatmaps (None: never checked)."""
    path = Path(artifact_path) / RECORD
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_record(artifact_path: Path, record: dict) -> Path:
    from fakefinder.core.files import atomic_write_json

    return atomic_write_json(Path(artifact_path) / RECORD, record)


def bare_network(model: nn.Module) -> tuple[Detector, bool]:
    """The bare network and whether its scores average the mirrored image."""
    if isinstance(model, MirrorAverage):
        return model.model, True
    return model, False


def smoothed(maps: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    """Each map blurred by a Gaussian of `sigma` times its shorter side (0: as it is): its peak
    then sits where its mass is, not on one noisy pixel."""
    if not sigma:
        return maps
    import cv2

    return [cv2.GaussianBlur(m, (0, 0), sigmaX=sigma * min(m.shape[:2])) for m in maps]


def method_of(model: nn.Module, method: str = "auto") -> str:
    """`mask` for a binary detector with a mask head (unless `cam` is asked for), else `cam`."""
    if method not in METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; choose one of {METHODS}")
    network, _ = bare_network(model)
    has_mask = getattr(network, "mask_head", None) is not None and getattr(network, "num_classes", 1) == 1
    if method == "mask" and not has_mask:
        raise ValueError("this model has no mask head: use the class-activation map (method cam)")
    return method if method != "auto" else ("mask" if has_mask else "cam")


CAM_MIN_SIDE = 7  # a map coarser than 7x7 (the last stage of a 224-px input at stride 32) says little


def cam_layer(network: nn.Module, side: int | None = None) -> nn.Module:
    """The module whose output is the backbone's deepest feature map (timm's `feature_info`, else
    the last convolution) that is still at least 7 cells wide for inputs of `side` pixels: the
    last stage for the usual input sizes, an earlier one for small inputs."""
    backbone = getattr(network, "backbone", network)
    modules = dict(backbone.named_modules())
    info = [
        stage for stage in getattr(backbone, "feature_info", None) or [] if stage.get("module") in modules
    ]
    if info:
        fine = [s for s in info if side is None or side / s["reduction"] >= CAM_MIN_SIDE]
        return modules[(fine or info[:1])[-1]["module"]]
    convolutions = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise ValueError(
            f"{type(backbone).__name__} has no convolutional feature map for a class-activation map"
        )
    return convolutions[-1]


def _mask_maps(network: Detector, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.sigmoid(network.mask(x).float())


def _cam_maps(network: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    from captum.attr import LayerGradCam

    layer = cam_layer(network, x.shape[-1])
    binary = getattr(network, "num_classes", 1) == 1
    gradcam = LayerGradCam(network, layer)
    with torch.enable_grad():
        maps = gradcam.attribute(
            x.requires_grad_(True), target=None if binary else target, relu_attributions=True
        )
    if maps.ndim != 4:
        raise ValueError(f"{type(layer).__name__} gives no spatial map (output {tuple(maps.shape)})")
    maps = maps.detach().float().sum(dim=1, keepdim=True).clamp_min(0)
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return maps / peak


def heatmaps(
    model: nn.Module,
    batch: torch.Tensor,
    sizes: list[tuple[int, int]],
    method: str = "auto",
    target: list[int] | None = None,
) -> list[np.ndarray]:
    """A map per image of the normalised `batch` (as the model scores it), resized to each `sizes`
    entry (height, width). `target`: the class index per image for an N-class network's CAM."""
    import torch.nn.functional as F

    network, mirrored = bare_network(model)
    chosen = method_of(model, method)
    side = batch.shape[-2:]

    def draw(x: torch.Tensor) -> torch.Tensor:
        maps = _mask_maps(network, x) if chosen == "mask" else _cam_maps(network, x, target)
        return F.interpolate(maps, size=side, mode="bilinear", align_corners=False)

    maps = draw(batch.clone())
    if mirrored:
        maps = (maps + torch.flip(draw(torch.flip(batch, dims=[3])), dims=[3])) / 2
    out = []
    for one, (height, width) in zip(maps[:, 0], sizes):
        resized = F.interpolate(one[None, None], size=(height, width), mode="bilinear", align_corners=False)
        out.append(resized[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32))
    return out
