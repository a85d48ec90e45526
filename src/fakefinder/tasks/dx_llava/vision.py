"""Vision towers for DX-LLaVA: every tower maps pixels to a sequence of image tokens (B, N, C).

ConvNeXt-style towers (open_clip, timm) give a feature map; its last stage is flattened row by row
into tokens (10x10x1536 at 320 px -> 100 tokens). CLIP ViT towers give the patch tokens of a chosen
hidden layer without the class token, as LLaVA-1.5 does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fakefinder.config import ConfigError
from fakefinder.engine.tiny import is_random, tiny_clip_vision_config
from fakefinder.tasks.dx_llava.config import DxLlavaModelConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class VisionTower(nn.Module):
    """Common interface: `hidden_size`, `image_size`, `mean`, `std`, `num_tokens` and
    `forward(pixels) -> (B, N, hidden_size)`."""

    hidden_size: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @torch.no_grad()
    def count_tokens(self) -> int:
        probe = torch.zeros(1, 3, self.image_size, self.image_size, dtype=next(self.parameters()).dtype)
        return int(self.forward(probe).shape[1])


class FeatureMapTower(VisionTower):
    """A CNN trunk whose `forward_features` returns (B, C, H, W): tokens are the H*W positions."""

    def __init__(self, trunk: nn.Module, hidden_size: int, image_size: int, mean, std) -> None:
        super().__init__()
        self.trunk = trunk
        self.hidden_size = hidden_size
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)

    # a detector tower may carry the detector's `mask_head` (a submodule, so no class default here)
    mask_spec: dict | None = None  # how that mask head sits on the trunk (`attach_mask_head`)

    def mask(self, pixels: torch.Tensor) -> torch.Tensor:
        """The manipulation-mask logits (N, 1, h, w) of the detector's mask head the tower carries."""
        from fakefinder.tasks.classification.networks import tapped_map

        if getattr(self, "mask_head", None) is None:
            raise ValueError("this vision tower carries no mask head")
        return self.mask_head(tapped_map(self.trunk, self.mask_spec["index"], pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.trunk.forward_features(pixels)
        if features.ndim != 4:
            raise ValueError(f"vision tower returned shape {tuple(features.shape)}, expected (B, C, H, W)")
        return features.flatten(2).transpose(1, 2)


class ClipTower(VisionTower):
    """A CLIP ViT (transformers): patch tokens of hidden layer `select_layer`, class token dropped."""

    def __init__(self, model: nn.Module, select_layer: int, mean=CLIP_MEAN, std=CLIP_STD) -> None:
        super().__init__()
        self.model = model
        self.select_layer = select_layer
        self.hidden_size = model.config.hidden_size
        self.image_size = model.config.image_size
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.select_layer][:, 1:]


def _timm_tower(name: str, pretrained: bool | str, image_size: int | None) -> FeatureMapTower:
    from fakefinder.tasks.classification.model import import_timm
    from fakefinder.tasks.classification.pretrained import load_pretrained

    timm = import_timm()
    hub = pretrained is True
    try:
        trunk = timm.create_model(name, pretrained=hub, num_classes=0)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"dx_llava.model.vision_tower: unknown timm model {name!r}") from exc
        raise
    if isinstance(pretrained, str):
        report = load_pretrained(trunk, pretrained, name)
        if not report.loaded:
            raise ConfigError(f"dx_llava.model.vision_pretrained: nothing from {pretrained!r} fits {name}")
    cfg = dict(getattr(trunk, "pretrained_cfg", {}) or {})
    size = image_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    return FeatureMapTower(
        trunk, trunk.num_features, size, cfg.get("mean", CLIP_MEAN), cfg.get("std", CLIP_STD)
    )


def _fakefinder_tower(path: str, image_size: int | None) -> FeatureMapTower:
    """The backbone of a fakefinder deepfake detector (its model artifact, or an older best.pt, read
    safely; its last feature map): image tokens that already carry deepfake evidence. The
    deepfake detector's input size and normalisation come along, and its mask head where it has one
    (DX-LLaVA's heatmaps are then that head's maps)."""
    from fakefinder.core.errors import FakefinderError
    from fakefinder.tasks.classification.kind import check_family
    from fakefinder.tasks.classification.model import from_artifact
    from fakefinder.tasks.registry import read_model

    if not Path(path).exists():
        raise ConfigError(f"dx_llava.model.vision_tower: deepfake detector model not found: {path}")
    try:
        artifact = read_model(path)
        check_family(artifact)
    except FakefinderError as exc:
        raise ConfigError(f"dx_llava.model.vision_tower: {exc}") from None
    detector = from_artifact(artifact, tta=False)
    trunk = detector.backbone
    p = artifact.preprocessing
    tower = FeatureMapTower(
        trunk, trunk.num_features, image_size or int(p["input_size"]), p["mean"], p["std"]
    )
    tower.arch = detector.arch
    arch = artifact.architecture
    if detector.mask_head is not None and int(arch.get("num_outputs", 1)) == 1:
        from fakefinder.tasks.classification.heatmaps import read_record

        record = read_record(Path(path)) or {}
        spec = {
            "stride": arch.get("mask_stride"),
            "prior": bool(arch.get("mask_prior")),
            "hidden": int(arch.get("mask_hidden") or 0),
            "smooth": float(record.get("smooth") or 0.0),
            "checked": {k: record[k] for k in ("beats_prior", "validation") if k in record} or None,
        }
        attach_mask_head(tower, spec, detector.mask_head)
    return tower


def attach_mask_head(tower: FeatureMapTower, spec: dict, head: nn.Module | None = None) -> None:
    """Give a detector tower the detector's mask head (`head`; a fresh one of the same shape when
    None, for weights loaded next): `spec` holds its `stride`, `prior`, `hidden` and the `smooth` its
    maps are blurred by (its localiser record)."""
    from fakefinder.tasks.classification.networks import mask_tap, new_mask_head

    index, channels = mask_tap(tower.trunk, getattr(tower, "arch", "the tower"), spec.get("stride"))
    tower.mask_head = head if head is not None else new_mask_head(channels, spec["prior"], spec["hidden"])
    tower.mask_spec = {**spec, "index": index}


def _open_clip_tower(name: str, pretrained: bool | str, image_size: int | None) -> FeatureMapTower:
    """open_clip ConvNeXt: `hf-hub:laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup` (config
    and weights from the hub), or a model name (`convnext_large_d_320`) with `vision_pretrained` a tag
    (`laion2b_s29b_b131k_ft_soup`), true (its first published tag), a file, or false (random)."""
    try:
        import open_clip
    except ImportError as exc:
        raise ConfigError(
            "dx_llava.model.vision_tower uses open_clip: pip install open_clip_torch (with torch pinned), or "
            "use the timm twin timm:convnext_large_mlp.clip_laion2b_ft_soup_320"
        ) from exc
    if name.startswith("hf-hub:") or isinstance(pretrained, str):
        tag = None if name.startswith("hf-hub:") else pretrained
    elif pretrained:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if not tags:
            raise ConfigError(
                f"dx_llava.model.vision_pretrained: open_clip has no published weights for {name!r}"
            )
        tag = tags[0]
    else:
        tag = None
    try:
        model = open_clip.create_model(name, pretrained=tag)
    except RuntimeError as exc:
        raise ConfigError(f"dx_llava.model.vision_tower=open_clip:{name}: {exc}") from exc
    visual = model.visual
    trunk = getattr(visual, "trunk", None)
    if trunk is None or not hasattr(trunk, "forward_features"):
        raise ConfigError(
            f"dx_llava.model.vision_tower: open_clip model {name!r} has no CNN trunk; "
            "use clip:<name> for ViT towers"
        )
    size = image_size or int(
        visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    )
    mean = getattr(visual, "image_mean", None) or CLIP_MEAN
    std = getattr(visual, "image_std", None) or CLIP_STD
    return FeatureMapTower(trunk, trunk.num_features, size, mean, std)


def _clip_tower(
    source: str | None, config: DxLlavaModelConfig, state: dict | None = None, settings: dict | None = None
) -> ClipTower:
    """A CLIP ViT tower: from `source` (a hub id or folder), else built from `settings` (a
    CLIPVisionConfig's fields) with `state` as its weights when given."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if source is None:
        fields = {k: v for k, v in (settings or {}).items() if k != "model_type"}
        try:
            model = CLIPVisionModel(CLIPVisionConfig(**fields))
        except (TypeError, ValueError, StrictDataclassError) as exc:
            raise ConfigError(f"dx_llava.model.random_config.vision_tower: {exc}") from None
    else:
        model = CLIPVisionModel.from_pretrained(source)
    if state is not None:
        if any(key.startswith("vision_model.") for key in model.state_dict()):
            state = {f"vision_model.{k}": v for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "position_ids" not in k]:
            raise ConfigError(
                f"the LLaVA checkpoint's CLIP tower does not fit: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}"
            )
    return ClipTower(model, config.vision_select_layer)


def build_vision_tower(config: DxLlavaModelConfig, llava_parts: dict | None = None) -> VisionTower:
    """The tower named by `config.vision_tower`; `llava_parts` (from a LLaVA checkpoint) supplies the
    CLIP tower config and weights for `vision_tower: llava`."""
    spec = config.vision_tower
    kind, _, name = spec.partition(":")
    random_init = False  # True: the weights cannot be rebuilt from the spec, so checkpoints hold them
    if spec == "llava":
        if not llava_parts:
            raise ConfigError("dx_llava.model.vision_tower=llava needs dx_llava.model.llava_checkpoint")
        if llava_parts.get("vision_state"):  # HF format: the CLIP tower is inside the checkpoint
            tower = _clip_tower(None, config, llava_parts["vision_state"], llava_parts["vision_config"])
        elif llava_parts.get("vision_source"):  # original format: the tower is named (mm_vision_tower)
            tower = _clip_tower(llava_parts["vision_source"], config)
        else:
            raise ConfigError(
                "dx_llava.model.vision_tower=llava: the checkpoint holds no vision tower and names none"
            )
    elif kind == "timm" and name:
        tower = _timm_tower(name, config.vision_pretrained, config.image_size)
        random_init = config.vision_pretrained is False
    elif kind == "open_clip" and name:
        tower = _open_clip_tower(name, config.vision_pretrained, config.image_size)
        random_init = config.vision_pretrained is False and not name.startswith("hf-hub:")
    elif kind == "fakefinder" and name:
        tower = _fakefinder_tower(name, config.image_size)
        random_init = True
    elif is_random(spec):
        settings = tiny_clip_vision_config(image_size=config.image_size or 32)
        settings.update(config.random_settings("vision_tower"))
        tower = _clip_tower(None, config, settings=settings)
        random_init = True
    elif kind == "clip" and name:
        tower = _clip_tower(name, config)
    else:
        raise ConfigError(
            f"dx_llava.model.vision_tower={spec!r}: use timm:<name>, open_clip:<name>, "
            "clip:<hub id or folder>, fakefinder:<deepfake detector model>, llava, or random:tiny"
        )
    tower.random_init = random_init
    if config.freeze_vision_tower:
        tower.requires_grad_(False)
        tower.eval()
    return tower
