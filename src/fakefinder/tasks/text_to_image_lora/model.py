"""The Stable Diffusion parts (diffusers, transformers) and the LoRA adapter (peft): where the base
comes from (a hub id, a local pipeline folder, or tiny random components built from configs), the
adapter added to the UNet (and the text encoder), the adapter saved in the file diffusers'
`load_lora_weights` reads, the artifact, and a pipeline with the adapter loaded."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from fakefinder.config import Config, ConfigError, config_to_yaml
from fakefinder.engine.tiny import is_random, random_parts, write_once
from fakefinder.tasks.text_to_image_lora.config import DiffusionConfig

log = logging.getLogger(__name__)

ADAPTER_NAME = "fakefinder"  # the name the artifact's adapter is loaded under in a pipeline
ADAPTER = "adapter"  # the artifact's adapter folder: pytorch_lora_weights.safetensors
LORA_FILE = "pytorch_lora_weights.safetensors"
PIPELINE = "pipeline"  # a merged artifact: the whole pipeline with the adapter fused in
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


# ---------------------------------------------------------------------------------------------
# tiny random components


def _byte_characters() -> list[str]:
    """The 256 printable characters byte-level BPE writes bytes as (printable ones stand for
    themselves, the others are moved past 255)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted, extra = list(kept), 0
    for byte in range(256):
        if byte not in kept:
            kept.append(byte)
            shifted.append(256 + extra)
            extra += 1
    return [chr(c) for c in shifted]


def tiny_defaults() -> dict[str, dict]:
    """Configs of a tiny SD-shaped UNet (latents 4 channels), VAE (2x down) and CLIP text encoder."""
    return {
        "unet": {
            "block_out_channels": [16, 32],
            "layers_per_block": 1,
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "cross_attention_dim": 32,
            "norm_num_groups": 8,
            "attention_head_dim": 4,
        },
        "vae": {
            "block_out_channels": [16, 32],
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2,
            "norm_num_groups": 8,
            "sample_size": 32,
        },
        "text_encoder": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "projection_dim": 32,
            "max_position_embeddings": 77,
        },
    }


def write_tiny_pipeline(folder: Path, overrides: dict | None = None, seed: int = 0) -> Path:
    """A randomly initialised Stable Diffusion pipeline in the diffusers layout at `folder`: a
    byte-level CLIP tokenizer (no merges), the tiny configs (with `overrides` per component), the
    SD 1.x noise schedule. It loads like any hub pipeline and draws noise."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    specs = tiny_defaults()
    for name, values in random_parts(overrides, tuple(specs), "diffusion.model.random_config").items():
        specs[name].update(values)
    folder = Path(folder)
    words = folder.with_name(folder.name + ".vocab")
    words.mkdir(parents=True, exist_ok=True)
    characters = _byte_characters()
    vocab = {
        token: i
        for i, token in enumerate(
            [*characters, *(c + "</w>" for c in characters), "<|startoftext|>", "<|endoftext|>"]
        )
    }
    (words / "vocab.json").write_text(json.dumps(vocab))
    (words / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        vocab_file=str(words / "vocab.json"),
        merges_file=str(words / "merges.txt"),
        model_max_length=specs["text_encoder"]["max_position_embeddings"],
    )
    torch.manual_seed(seed)
    try:
        unet = UNet2DConditionModel(**specs["unet"])
        vae = AutoencoderKL(**specs["vae"])
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(vocab),
                bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"],
                **specs["text_encoder"],
            )
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"diffusion.model.random_config: {exc}") from None
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(words)
    return folder


def base_source(cfg: DiffusionConfig, work_dir: Path) -> str:
    """Where the base pipeline loads from: `model.base` (a hub id or folder), or for `random:tiny` a
    folder written once in `work_dir/base_model` (again when made from other settings)."""
    model = cfg.model
    random_parts(model.random_config, tuple(tiny_defaults()), "diffusion.model.random_config", model.base)
    if not is_random(model.base):
        local = Path(model.base).expanduser()
        return str(local.resolve()) if local.is_dir() else model.base  # a folder: found from anywhere later
    made_from = {"random_config": model.random_config or {}, "seed": cfg.train.seed}
    folder = write_once(
        Path(work_dir) / "base_model",
        lambda partial: write_tiny_pipeline(partial, model.random_config, cfg.train.seed),
        made_from,
        "model_index.json",
    )
    return str(folder.resolve())


# ---------------------------------------------------------------------------------------------
# loading


def load_error(source: str, key: str, exc: Exception) -> ConfigError:
    local = Path(source).exists()
    hint = (
        "a folder in the diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
        "scheduler/) with safetensors weights"
        if local
        else "a hub id of a Stable Diffusion pipeline (with internet, or in the local hub cache)"
    )
    return ConfigError(f"{key}={source!r}: cannot load it as {hint}: {type(exc).__name__}: {exc}")


def load_components(
    source: str, revision: str | None, variant: str | None, key: str = "diffusion.model.base"
) -> dict:
    """The base's tokenizer, text encoder, VAE, UNet, training noise schedule and its own sampler, in
    fp32 (read as safetensors only: a pickled checkpoint is refused, no code from the repository runs;
    only SD 1.x / 2.x pipelines)."""
    import diffusers
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        DiffusionPipeline,
        SchedulerMixin,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    options = {"revision": revision}
    weights = {**options, "variant": variant, "use_safetensors": True}
    try:
        index = DiffusionPipeline.load_config(source, **options)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise load_error(source, key, exc) from None
    name = str(index.get("_class_name", ""))
    if "text_encoder_2" in index or "XL" in name or not all(part in index for part in COMPONENTS):
        raise ConfigError(
            f"{key}={source!r}: a {name or 'pipeline'} with components "
            f"{sorted(k for k in index if not k.startswith('_'))}; this kind trains Stable Diffusion "
            "1.x / 2.x pipelines (unet, vae, text_encoder, tokenizer, scheduler), not SDXL or others"
        )
    sampler = getattr(diffusers, str((index.get("scheduler") or [None, ""])[1]), None)
    if not (isinstance(sampler, type) and issubclass(sampler, SchedulerMixin)):
        raise ConfigError(
            f"{key}={source!r}: model_index.json names the scheduler {index.get('scheduler')}, which "
            "is not a diffusers scheduler"
        )
    try:
        parts = {
            "sampler": sampler.from_pretrained(source, subfolder="scheduler", **options),
            "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **options),
            "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **weights),
            "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", **weights),
            "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", **weights),
            "noise": DDPMScheduler.from_pretrained(source, subfolder="scheduler", **options),
        }
    except (OSError, ValueError, EnvironmentError, TypeError) as exc:
        raise load_error(source, key, exc) from None
    for name in ("text_encoder", "vae", "unet"):
        parts[name].requires_grad_(False)
    return parts


def load_pipeline(
    source: str,
    revision: str | None,
    variant: str | None,
    dtype: torch.dtype = torch.float32,
    key: str = "diffusion.model.base",
):
    """The base as a `StableDiffusionPipeline` (safetensors only; no safety checker, no remote code)."""
    from diffusers import StableDiffusionPipeline

    try:
        pipeline = StableDiffusionPipeline.from_pretrained(
            source,
            revision=revision,
            variant=variant,
            use_safetensors=True,
            dtype=dtype,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    except (OSError, ValueError, EnvironmentError, TypeError) as exc:
        raise load_error(source, key, exc) from None
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def set_sampler(pipeline, name: str) -> None:
    """The pipeline's sampler: its own (`default`), or DDIM / Euler / DPM++ 2M from its schedule."""
    if name == "default":
        return
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    kind = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm++": DPMSolverMultistepScheduler}[
        name
    ]
    pipeline.scheduler = kind.from_config(pipeline.scheduler.config)


# ---------------------------------------------------------------------------------------------
# the adapter


def add_adapters(parts: dict, cfg: DiffusionConfig) -> None:
    """Fresh LoRA adapters (peft) on the UNet's target layers, and on the text encoder's when
    `train_text_encoder`; only they train."""
    from peft import LoraConfig

    lora = cfg.lora
    alpha = lora.alpha or lora.r

    def attach(model, modules, key):
        try:
            model.add_adapter(
                LoraConfig(
                    r=lora.r,
                    lora_alpha=alpha,
                    lora_dropout=lora.dropout,
                    init_lora_weights="gaussian",
                    target_modules=modules,
                )
            )
        except ValueError as exc:
            raise ConfigError(f"{key}={modules}: {exc}") from None

    attach(parts["unet"], lora.target_modules, "diffusion.lora.target_modules")
    if lora.train_text_encoder:
        attach(parts["text_encoder"], lora.text_encoder_modules, "diffusion.lora.text_encoder_modules")


def adapter_state(model) -> dict[str, torch.Tensor]:
    """The model's LoRA weights (peft names)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def set_adapter_state(model, state: dict[str, torch.Tensor], where: str) -> None:
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    expected = set(get_peft_model_state_dict(model))
    absent, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if absent or extra:
        raise ConfigError(
            f"{where}: its LoRA weights do not fit this adapter (missing {absent[:3]}, unknown {extra[:3]}); "
            f"were diffusion.lora settings changed since it was written?"
        )
    try:
        set_peft_model_state_dict(model, state)
    except RuntimeError as exc:
        raise ConfigError(
            f"{where}: its LoRA weights do not fit this adapter ({str(exc).splitlines()[0]}); was "
            "diffusion.lora.r changed?"
        ) from None


def save_lora(folder: Path, unet, text_encoder=None) -> Path:
    """The adapter as diffusers writes it (`pytorch_lora_weights.safetensors`, keys `unet.*` /
    `text_encoder.*`): `pipeline.load_lora_weights(folder)` reads it."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    def layers(model):
        return convert_state_dict_to_diffusers(
            {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        )

    def settings(
        model,
    ):  # the LoRA's rank, alpha and targets travel in the file (else it loads at alpha = rank)
        return model.peft_config["default"].to_dict()

    StableDiffusionPipeline.save_lora_weights(
        str(folder),
        unet_lora_layers=layers(unet),
        text_encoder_lora_layers=layers(text_encoder) if text_encoder is not None else None,
        unet_lora_adapter_metadata=settings(unet),
        text_encoder_lora_adapter_metadata=settings(text_encoder) if text_encoder is not None else None,
        safe_serialization=True,
    )
    return Path(folder) / LORA_FILE


def save_artifact(
    parts: dict, cfg: DiffusionConfig, source: str, output: Path, config: Config, training: dict
) -> Path:
    """`adapter/` (what `load_lora_weights` reads), `model.json` (the base it belongs to, the LoRA
    and generation settings) and `config.yaml`; written aside and swapped into place whole."""
    from fakefinder.core.artifact import write_artifact

    def adapter(folder: Path) -> None:
        folder.mkdir()
        save_lora(folder, parts["unet"], parts["text_encoder"] if cfg.lora.train_text_encoder else None)

    architecture = {
        "base": {
            "source": source,
            "revision": cfg.model.revision,
            "variant": cfg.model.variant,
            "name": cfg.model.base,
        },
        "merged": False,
        "lora": cfg.lora.model_dump(mode="json"),
        "resolution": cfg.data.resolution,
        "diffusion": cfg.model_dump(mode="json"),
    }
    write_artifact(
        output,
        config.task,
        json.loads(json.dumps(architecture, default=str)),
        [],
        {"resolution": cfg.data.resolution},
        training=training,
        extra={ADAPTER: adapter, "config.yaml": lambda f: f.write_text(config_to_yaml(config))},
    )
    return Path(output)


def read_artifact_config(path: Path) -> tuple[DiffusionConfig, dict]:
    """(the saved `diffusion` settings, model.json's architecture), read tolerantly."""
    from fakefinder.config import section_from_saved
    from fakefinder.core.artifact import read_artifact

    artifact = read_artifact(path)
    if artifact.kind != "text_to_image_lora":
        raise ConfigError(f"{path}: holds a {artifact.kind} model, not a text-to-image LoRA")
    meta = dict(artifact.architecture)
    cfg, ignored = section_from_saved(
        DiffusionConfig, meta.get("diffusion", {}), f"{path}/model.json", "diffusion"
    )
    if ignored:
        log.warning("%s: settings this version does not know were ignored: %s", path, ignored)
    return cfg, meta


def artifact_pipeline(path: Path, device, dtype: torch.dtype = torch.float32):
    """(pipeline with the artifact's adapter loaded, saved settings, meta): the base it was trained on
    plus `adapter/`, or a merged artifact's own pipeline."""
    path = Path(path)
    cfg, meta = read_artifact_config(path)
    if meta.get("merged"):
        pipeline = load_pipeline(str(path / PIPELINE), None, None, dtype, key=f"{path}/{PIPELINE}")
    else:
        base = meta["base"]
        pipeline = load_pipeline(
            base["source"],
            base.get("revision"),
            base.get("variant"),
            dtype,
            key=f"{path}/model.json: base.source",
        )
        adapter = path / ADAPTER / LORA_FILE
        if not adapter.is_file():
            raise ConfigError(f"{path}: the adapter {ADAPTER}/{LORA_FILE} is missing")
        from diffusers.utils import logging as diffusers_logging

        quiet = not (meta.get("lora") or {}).get(
            "train_text_encoder"
        )  # else diffusers warns of no text encoder keys
        level = diffusers_logging.get_verbosity()
        if quiet:
            diffusers_logging.set_verbosity_error()
        try:
            pipeline.load_lora_weights(
                str(path / ADAPTER), adapter_name=ADAPTER_NAME, weight_name=LORA_FILE, use_safetensors=True
            )
        finally:
            diffusers_logging.set_verbosity(level)
    return pipeline.to(device), cfg, meta
