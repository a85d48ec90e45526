"""Model registry: `create(name, ...)` builds a binary detector, `list_models()` names the presets.

Names are timm names (`efficientnet_b4`, `legacy_xception`, `swin_tiny_patch4_window7_224`,
`convnext_tiny`, `resnet50`, `efficientnet_lite0`, or any other timm architecture), plus presets
such as `baseline` (EfficientNet-B4 with an SRM frequency branch).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass

from fakefinder.core.errors import FakefinderError
from fakefinder.engine.tiny import RANDOM_TINY, is_random
from fakefinder.tasks.classification.networks import Detector
from fakefinder.tasks.classification.pretrained import LoadReport, WeightsError, load_pretrained

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    backbone: str
    frequency: str | None = None
    description: str = ""


PRESETS: dict[str, Preset] = {
    "baseline": Preset("efficientnet_b4", "srm", "EfficientNet-B4 + SRM frequency branch"),
    "efficientnet_b4": Preset("efficientnet_b4", description="EfficientNet-B4 (seed baseline)"),
    "legacy_xception": Preset("legacy_xception", description="Xception (FaceForensics++ reference)"),
    "swin_tiny_patch4_window7_224": Preset("swin_tiny_patch4_window7_224", description="Swin-T"),
    "swin_small_patch4_window7_224": Preset("swin_small_patch4_window7_224", description="Swin-S"),
    "swin_base_patch4_window7_224": Preset("swin_base_patch4_window7_224", description="Swin-B"),
    "convnext_tiny": Preset("convnext_tiny", description="ConvNeXt-T"),
    "convnext_small": Preset("convnext_small", description="ConvNeXt-S"),
    "convnext_base": Preset("convnext_base", description="ConvNeXt-B"),
    "resnet50": Preset("resnet50", description="ResNet-50"),
    "efficientnet_lite0": Preset("efficientnet_lite0", description="EfficientNet-Lite0 (offline weights)"),
    "dual_efficientnet_lite0": Preset("efficientnet_lite0", "srm", "EfficientNet-Lite0 + SRM branch"),
    RANDOM_TINY: Preset(
        "test_efficientnet", description="a tiny random EfficientNet (tests, demos; never pretrained)"
    ),
}


def list_models() -> list[str]:
    return sorted(PRESETS)


class UnknownModelError(FakefinderError, ValueError):
    pass


def import_timm():
    import timm  # torchvision works on CPU-only torch because `import fakefinder` armed the fix

    return timm


def resolve(name: str) -> Preset:
    if name in PRESETS:
        return PRESETS[name]
    timm = import_timm()
    if timm.is_model(name):
        return Preset(name)
    candidates = list(PRESETS) + timm.list_models()
    close = list(dict.fromkeys(difflib.get_close_matches(name, candidates, n=8, cutoff=0.6)))[:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model '{name}'.{hint} (fakefinder presets: {', '.join(list_models())})")


def create(
    name: str,
    pretrained: bool | str = False,
    dropout: float = 0.0,
    frequency: str | None = None,
    drop_path: float | None = None,
    mask_head: bool = False,
    mask_stride: int | None = None,
    num_classes: int = 1,
    mask_prior: bool = False,
    mask_hidden: int = 0,
    **timm_kwargs,
) -> Detector:
    """Build a classification network. `pretrained`: False; True (timm's hub weights, needs internet once);
    a file path (timm checkpoint or plain state dict); or 'package:efficientnet_lite0' (offline)."""
    preset = resolve(name)
    if is_random(name):
        pretrained = False
    timm = import_timm()
    kwargs = dict(timm_kwargs)
    if drop_path is not None:
        kwargs["drop_path_rate"] = drop_path
    use_hub = pretrained is True
    backbone = timm.create_model(preset.backbone, pretrained=use_hub, num_classes=0, **kwargs)
    report: LoadReport | None = None
    if isinstance(pretrained, str) and pretrained:
        report = load_pretrained(backbone, pretrained, preset.backbone)
        if report.loaded == 0:
            raise WeightsError(f"no tensor of {pretrained} fits {preset.backbone}: {report.summary()}")
        log.info("pretrained weights: %s", report.summary())
    model = Detector(
        backbone,
        preset.backbone,
        dropout=dropout,
        frequency=frequency or preset.frequency,
        mask_head=mask_head,
        mask_stride=mask_stride,
        num_classes=num_classes,
        mask_prior=mask_prior,
        mask_hidden=mask_hidden,
    )
    model.load_report = report
    return model


def architecture(info: dict) -> dict:
    """What a model artifact records to rebuild the network (from the trainer's model info)."""
    return {
        "name": info["name"],
        "backbone": info.get("arch", info["name"]),
        "frequency": info.get("frequency"),
        "dropout": info.get("dropout", 0.0),
        "mask_head": bool(info.get("mask_head", False)),
        "mask_stride": info.get("mask_stride"),
        "num_outputs": int(info.get("num_outputs", 1)),
        # a refitted localiser's head; older artifacts have the plain one
        **({"mask_prior": True} if info.get("mask_prior") else {}),
        **({"mask_hidden": int(info["mask_hidden"])} if info.get("mask_hidden") else {}),
    }


def from_artifact(artifact, device="cpu", tta: bool = True) -> Detector:
    """The network of a timm-backbone artifact (detector or classifier) with its weights, in eval
    mode, wrapped for its test-time augmentation (unless `tta=False`)."""
    from fakefinder.core.artifact import ArtifactError
    from fakefinder.tasks.classification.networks import with_tta

    arch = artifact.architecture
    try:
        model = create(
            arch["name"],
            pretrained=False,
            dropout=arch.get("dropout", 0.0),
            frequency=arch.get("frequency"),
            mask_head=bool(arch.get("mask_head")),
            mask_stride=arch.get("mask_stride"),
            num_classes=int(arch.get("num_outputs", 1)),
            mask_prior=bool(arch.get("mask_prior", False)),
            mask_hidden=int(arch.get("mask_hidden") or 0),
        )
    except KeyError as exc:
        raise ArtifactError(f"{artifact.path}: model.json architecture lacks {exc}") from None
    try:
        model.load_state_dict(artifact.weights())
    except RuntimeError as exc:
        raise ArtifactError(
            f"{artifact.path}: the weights do not fit {arch['name']}: {str(exc)[:300]}"
        ) from None
    model.to(device).eval()
    if artifact.preprocessing.get("channels_last"):  # trained so: inputs come channels_last too
        import torch

        model.to(memory_format=torch.channels_last)
    return with_tta(model, artifact.preprocessing.get("tta", "none")) if tta else model


__all__ = [
    "Detector",
    "UnknownModelError",
    "WeightsError",
    "architecture",
    "create",
    "from_artifact",
    "list_models",
    "resolve",
]
