"""A text-to-image LoRA exported: the adapter diffusers loads (plus the kohya single-file layout for
A1111 / ComfyUI), or merged into a whole pipeline; `merge` folds it into a standalone artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from fakefinder.config import ConfigError
from fakefinder.tasks.text_to_image_lora.model import ADAPTER_NAME


def merge(artifact: Path, output: Path) -> Path:
    """The adapter fused into the UNet (and text encoder): an artifact of the same kind whose
    `pipeline/` is a whole Stable Diffusion pipeline diffusers loads on its own."""
    from fakefinder.core.artifact import write_artifact
    from fakefinder.tasks.text_to_image_lora.model import PIPELINE, artifact_pipeline

    artifact, output = Path(artifact), Path(output)
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"{output}: exists and is not empty; choose a new folder")
    pipeline, cfg, meta = artifact_pipeline(artifact, torch.device("cpu"))
    if meta.get("merged"):
        raise ConfigError(f"{artifact}: is merged already (no adapter left)")
    pipeline.fuse_lora(adapter_names=[ADAPTER_NAME], lora_scale=1.0)
    pipeline.unload_lora_weights()
    architecture = {**meta, "merged": True, "merged_from": str(artifact)}
    write_artifact(
        output,
        "text_to_image_lora",
        architecture,
        [],
        {"resolution": meta.get("resolution")},
        training={"merged_from": str(artifact)},
        extra={PIPELINE: lambda folder: pipeline.save_pretrained(folder, safe_serialization=True)},
    )
    return output


KOHYA_FILE = (
    "lora-kohya.safetensors"  # the single-file layout AUTOMATIC1111, ComfyUI and kohya's scripts read
)


def write_kohya(source: Path, target: Path, lora: dict) -> Path:
    """The diffusers-format adapter `source` in the kohya layout (`lora_unet_*` / `lora_te1_*` keys,
    `lora_down` / `lora_up`, one `alpha` per layer: the adapter's own, which diffusers' converter
    would set to the rank)."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import load_file, save_file

    peft_names = (
        (".lora.down.weight", ".lora_A.weight"),
        (".lora.up.weight", ".lora_B.weight"),  # the UNet's
        (".lora_linear_layer.down.weight", ".lora_A.weight"),  # the text encoder's
        (".lora_linear_layer.up.weight", ".lora_B.weight"),
    )
    named = {}
    for key, value in load_file(str(source)).items():
        for old, new in peft_names:
            key = key.replace(old, new)
        named[key] = value
    kohya = convert_state_dict_to_kohya(named)
    rank = lora.get("r", lora.get("rank"))  # artifacts written before the key was renamed say "rank"
    alpha = lora.get("alpha") or rank
    for key in [k for k in kohya if k.endswith(".alpha")]:
        kohya[key] = torch.tensor(float(alpha if alpha is not None else kohya[key]))
    save_file(
        {k: v.contiguous() for k, v in kohya.items()},
        str(target),
        metadata={"ss_network_dim": str(rank), "ss_network_alpha": str(alpha)},
    )
    return target


def export(artifact: Path, output: Path, merged: bool = False) -> Path:
    """The adapter as a folder `pipeline.load_lora_weights(output)` reads, beside it the same in the
    kohya single-file layout (AUTOMATIC1111, ComfyUI) and the base it belongs to (`fakefinder-base.json`);
    with `merged`, a whole pipeline folder with the adapter fused in."""
    from fakefinder.tasks.text_to_image_lora.model import ADAPTER, LORA_FILE, PIPELINE, read_artifact_config

    artifact, output = Path(artifact), Path(output)
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"{output}: exists and is not empty; choose a new folder")
    _, meta = read_artifact_config(artifact)
    if merged or meta.get("merged"):
        if meta.get("merged"):
            shutil.copytree(artifact / PIPELINE, output, dirs_exist_ok=True)
            return output
        staging = output.with_name(output.name + ".merging")
        shutil.rmtree(staging, ignore_errors=True)
        merge(artifact, staging)
        shutil.rmtree(output, ignore_errors=True)
        (staging / PIPELINE).rename(output)
        shutil.rmtree(staging)
        return output
    shutil.copytree(artifact / ADAPTER, output, dirs_exist_ok=True)
    write_kohya(output / LORA_FILE, output / KOHYA_FILE, meta.get("lora") or {})
    (output / "fakefinder-base.json").write_text(
        json.dumps(
            {"base": meta.get("base"), "lora": meta.get("lora"), "resolution": meta.get("resolution")},
            indent=1,
        )
    )
    return output
