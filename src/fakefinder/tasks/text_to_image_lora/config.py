"""The `diffusion` config section of the `text_to_image_lora` kind: the Stable Diffusion base, the
captioned image folder, the LoRA adapter, training, the sample images written while it trains,
evaluation and generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from fakefinder.config import LoraSection, RunSection, Section
from fakefinder.engine.tiny import RANDOM_TINY

PROMPT_EXTENSIONS = (".txt", ".jsonl")  # the files predict reads prompts from


class DiffusionModelConfig(Section):
    base: str = Field(
        default="stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="A Stable Diffusion 1.x / 2.x pipeline in the diffusers layout (model_index.json, "
        "unet/, vae/, text_encoder/, tokenizer/, scheduler/): a hub id or a local folder, read as "
        "safetensors only. "
        f"'{RANDOM_TINY}': tiny random components built from configs (plumbing checks; it draws noise).",
    )
    revision: str | None = Field(
        default=None, description="The hub revision (branch, tag or commit) of `base`."
    )
    variant: str | None = Field(default=None, description="A weights variant of `base`, e.g. fp16.")
    random_config: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description=f"With base '{RANDOM_TINY}': settings that replace the tiny defaults, per "
        "component (unet, vae, text_encoder).",
    )
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="The frozen weights (UNet, VAE, text encoder): auto = the training precision "
        "on a GPU, fp32 on the CPU. The adapter always trains in fp32.",
    )


class DiffusionDataConfig(Section):
    """A folder of images with captions: `metadata.jsonl` lines {"file_name", "text"} (in any folder,
    names relative to it), or a `.txt` file of the same name beside each image."""

    path: Path | None = Field(default=None, description="The folder of images with captions to train on.")
    captions: Literal["auto", "metadata", "txt"] = Field(
        default="auto",
        description="Where captions come from: auto = metadata.jsonl where a folder has one, "
        "same-name .txt files elsewhere.",
    )
    caption_column: str = Field(
        default="text", description="The metadata.jsonl field that holds the caption."
    )
    require_captions: bool = Field(
        default=True,
        description="An image without a caption is an error; off: it trains with `default_caption`.",
    )
    default_caption: str = Field(default="", description="The caption of an image without one.")
    bad_files: Literal["error", "skip"] = Field(
        default="error",
        description="A caption without its image, an image without a caption, an unreadable "
        "image: stop naming every one (error), or leave them out, listed (skip).",
    )
    confine: bool = Field(
        default=False,
        description="Every image must lie inside its folder once links are "
        "followed (the platform sets this).",
    )
    val_path: Path | None = Field(
        default=None,
        description="Held-out captioned images (default: val_ratio of `path`, carved with `seed`).",
    )
    val_ratio: float = Field(default=0.1, ge=0, lt=1)
    test_path: Path | None = Field(default=None, description="Read by `fakefinder evaluate` only.")
    seed: int = Field(default=0, description="Seeds the draw of the validation images.")
    resolution: int = Field(
        default=512,
        ge=8,
        description="Training images are resized (shorter side) and cropped to this square; a multiple of 8.",
    )
    center_crop: bool = Field(default=False, description="Crop the centre (else a random crop each time).")
    random_flip: bool = Field(default=True, description="Flip training images horizontally at random.")
    caption_dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Share of captions replaced by the empty one (keeps classifier-free guidance working).",
    )

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"{value} is not a multiple of 8 (the VAE works on 8-pixel blocks)")
        return value


class DiffusionLoraConfig(LoraSection):
    target_modules: list[str] = Field(
        default_factory=lambda: ["to_k", "to_q", "to_v", "to_out.0"],
        description="UNet layers to adapt (its attention projections).",
    )
    train_text_encoder: bool = Field(default=False, description="An adapter on the text encoder too.")
    text_encoder_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"],
        description="Text-encoder layers to adapt, with train_text_encoder.",
    )

    @field_validator("text_encoder_modules")
    @classmethod
    def _some_text_encoder_modules(cls, value):
        if not value:
            raise ValueError("name at least one module")
        return value


class DiffusionTrainConfig(RunSection):
    output_dir: Path = Path("output/sd-lora")
    max_steps: int = Field(default=2000, ge=1, description="Optimizer steps (each `accumulate` batches).")
    epochs: float | None = Field(
        default=None, gt=0, description="Train this many passes over the images instead of max_steps."
    )
    batch_size: int = Field(default=1, ge=1)
    accumulate: int = Field(default=4, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    text_encoder_lr: float | None = Field(default=None, gt=0, description="Default: lr.")
    scale_lr: bool = Field(default=False, description="lr times batch_size x accumulate.")
    scheduler: Literal["constant", "constant_with_warmup", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=1e-2, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    grad_checkpointing: bool = Field(default=False, description="Less GPU memory for more time.")
    snr_gamma: float | None = Field(
        default=5.0, gt=0, description="Min-SNR loss weighting (None: plain MSE)."
    )
    noise_offset: float = Field(
        default=0.0,
        ge=0,
        description="Offset noise: a random shift per image and channel added to the noise "
        "(a wider contrast range).",
    )
    save_steps: int = Field(default=250, ge=1, description="A checkpoint every this many steps.")
    save_total_limit: int = Field(default=2, ge=1, description="Checkpoints kept (the newest).")
    eval_steps: int = Field(
        default=250,
        ge=1,
        description="Sample images at the fixed prompts and the held-out "
        "loss every this many steps (and at the end).",
    )
    logging_steps: int = Field(default=10, ge=1)


class DiffusionSampleConfig(Section):
    """Images generated at fixed prompts and seeds while training (every `train.eval_steps` and at the
    end) and by predict."""

    prompts: list[str] = Field(
        default_factory=lambda: ["a photo of a person's face, studio light", "a close-up portrait photo"],
        description="The fixed prompts the samples are drawn at.",
    )
    negative_prompt: str = Field(default="", description="What the samples should not show.")
    images_per_prompt: int = Field(default=1, ge=1, description="Images drawn per prompt.")
    steps: int = Field(default=25, ge=1, description="Denoising steps.")
    guidance_scale: float = Field(default=7.5, ge=0, description="Classifier-free guidance scale.")
    seed: int = Field(default=0, description="Seed of the first prompt's samples; the next prompts count up.")
    size: int | None = Field(default=None, ge=8, description="Default: data.resolution.")
    scheduler: Literal["default", "ddim", "euler", "dpm++"] = Field(
        default="default", description="The sampler: the base pipeline's own, or one of these."
    )


class DiffusionEvalConfig(Section):
    timesteps: int = Field(
        default=10,
        ge=1,
        description="Held-out loss: each image at this many timesteps "
        "spread over the schedule, with fixed noise.",
    )


class DiffusionConfig(Section):
    model: DiffusionModelConfig = Field(default_factory=DiffusionModelConfig)
    data: DiffusionDataConfig = Field(default_factory=DiffusionDataConfig)
    lora: DiffusionLoraConfig = Field(default_factory=DiffusionLoraConfig)
    train: DiffusionTrainConfig = Field(default_factory=DiffusionTrainConfig)
    sample: DiffusionSampleConfig = Field(default_factory=DiffusionSampleConfig)
    eval: DiffusionEvalConfig = Field(default_factory=DiffusionEvalConfig)
