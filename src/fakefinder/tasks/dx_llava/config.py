"""The `dx_llava` config section: what the explainable detector is built from, its data and training."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fakefinder.config import ConfigError, QuantizedLoraSection, RunSection
from fakefinder.config import Section as _Section
from fakefinder.engine.tiny import is_random, random_parts

RANDOM_PARTS = ("language_model", "vision_tower")  # what `random:tiny` may build, each set by random_config


class DxLlavaModelConfig(_Section):
    """What the vision-language detector is built from."""

    language_model: str = Field(
        default="lmsys/vicuna-7b-v1.5",
        description="A causal LM: hub id, local folder, 'package:smollm2-135m-instruct' (offline), or "
        "'random:tiny' (a tiny random LLaMA with a character tokenizer, for tests and demos). "
        "Ignored when llava_checkpoint is set (the LM comes from it).",
    )
    gguf_file: str | None = Field(default=None, description="Load the LM from this GGUF file in the folder.")
    tokenizer: str | None = Field(
        default=None,
        description="Default: the language model's (or the checkpoint's; for 'random:tiny' a character "
        "tokenizer).",
    )
    random_config: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description="With 'random:tiny' as language_model or vision_tower: config settings that replace the "
        "tiny defaults, per part (language_model: a transformers LM config; vision_tower: a CLIP vision "
        "config).",
    )
    llava_checkpoint: str | None = Field(
        default=None,
        description="LLaVA-1.5 checkpoint for the LM and projector (llava-hf/llava-1.5-7b-hf, "
        "liuhaotian/llava-v1.5-7b, or a local folder in either format).",
    )
    vision_tower: str = Field(
        default="open_clip:hf-hub:laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup",
        description="open_clip:<name>, timm:<name> (e.g. timm:convnext_large_mlp.clip_laion2b_ft_soup_320), "
        "clip:<hub id or folder> (a CLIP ViT), 'llava' (the CLIP tower inside llava_checkpoint), "
        "fakefinder:<best.pt> (the backbone of a deepfake detector trained with `fakefinder train`; saved "
        "with the run), or 'random:tiny' (a tiny random CLIP ViT, for tests and demos).",
    )
    vision_pretrained: bool | str = Field(
        default=True,
        description="timm towers: true (hub), false, a weights file, or 'package:efficientnet_lite0'.",
    )
    vision_select_layer: int = Field(
        default=-2, description="CLIP towers: hidden layer whose tokens are used."
    )
    image_size: int | None = Field(default=None, ge=8, description="Default: the tower's own input size.")
    freeze_vision_tower: bool = Field(default=True, description="Keep the vision tower's weights as loaded.")
    projector: str = Field(
        default="mlp2x_gelu",
        pattern=r"^(linear|mlp\d+x_gelu)$",
        description="Vision features -> LM embeddings: linear, or mlpNx_gelu (N linear layers with GELU).",
    )
    pretrained_projector: Path | None = Field(
        default=None, description="A stage-1 projector file (mm_projector.safetensors) to start from."
    )
    head_source: Literal["image_tokens", "last_prompt_token"] = Field(
        default="image_tokens",
        description="Binary head input: mean of the projected image tokens, or the LM hidden state of the "
        "last prompt token.",
    )
    head_hidden: int = Field(default=512, ge=1, description="Width of the binary head's hidden layer.")
    region_tokens: bool = Field(
        default=False,
        description="Add one image token per facial region (the tower's features pooled over the region "
        "the face mesh finds), in a fixed order after the grid tokens: the language model can then "
        "name which region looks changed.",
    )
    measured_prompt: bool = Field(
        default=False,
        description="Add to each question one line of what was measured on the image: the regions the "
        "tower's mask head marks (its map cut at a threshold fitted on the eval split's true masks), "
        "how much of the face, the edge of the marked area, and the face's pose, sharpness and light. "
        "Needs a fakefinder:<detector> tower with a mask head.",
    )
    template: Literal["auto", "vicuna_v1", "chatml"] = Field(
        default="auto", description="Conversation format; auto: chatml if the tokenizer knows <|im_start|>."
    )
    system_prompt: str | None = Field(default=None, description="Default: the template's own.")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="Language model weights: auto = the checkpoint's on GPU, fp32 on CPU."
    )

    def random_settings(self, part: str) -> dict:
        """`random_config[part]` (checked): settings over the tiny defaults of a `random:tiny` part."""
        key = "dx_llava.model.random_config"
        parts = random_parts(self.random_config, RANDOM_PARTS, key)
        for name in RANDOM_PARTS:
            if parts[name] and not is_random(getattr(self, name)):
                raise ConfigError(f"{key}.{name} is for {name}: random:tiny, not {getattr(self, name)!r}")
        return parts[part]


class DxLlavaDataConfig(_Section):
    """LLaVA conversation JSON files (paths relative to the working directory, like outputs)."""

    train_json: Path | None = Field(default=None, description="LLaVA conversation JSON to train on.")
    eval_json: Path | None = Field(default=None, description="Held out during training (eval_steps).")
    test_json: Path | None = Field(default=None, description="Read by `fakefinder evaluate` only.")
    image_folder: Path | None = Field(default=None, description="Images in the JSON are relative to it.")
    image_aspect_ratio: Literal["pad", "resize"] = Field(
        default="pad", description="pad: to a square with the mean colour, then resize."
    )
    group_by_length: bool = Field(
        default=True, description="Batch conversations of similar length together (less padding)."
    )
    max_length: int = Field(default=2048, ge=16, description="Tokens per sample, image tokens included.")
    eval_max_samples: int | None = Field(default=None, ge=1, description="Evaluate on at most this many.")
    ambiguous_labels: Literal["skip", "error"] = Field(
        default="skip",
        description="A sample whose answer names neither or both classes: leave it out of the "
        "binary loss (listed in the log), or stop with an error.",
    )


class DxLlavaTrainConfig(RunSection):
    output_dir: Path = Path("output/dx-llava")
    stage: Literal["projector", "finetune"] = Field(
        default="finetune", description="projector: stage 1 (tune_mm_mlp_adapter), only the projector trains."
    )
    mode: Literal["full", "lora", "qlora"] = Field(
        default="lora",
        description="full: the language model trains "
        "whole; lora: an adapter on it (dx_llava.lora); qlora: the same on a 4-bit language model.",
    )
    lm_loss_weight: float = Field(default=1.0, ge=0, description="Weight of the answer tokens' loss.")
    binary_loss_weight: float = Field(default=10.0, ge=0, description="Weight of the binary head's loss.")
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=4, ge=1)
    eval_batch_size: int | None = Field(default=None, ge=1)
    accumulate: int = Field(default=1, ge=1)
    lr: float = Field(default=2e-4, gt=0)
    projector_lr: float | None = Field(
        default=None, gt=0, description="Default: lr (2e-5 in full mode is common)."
    )
    head_lr: float | None = Field(
        default=None, gt=0, description="Learning rate of the binary head (default: lr)."
    )
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    tf32: bool = True
    grad_checkpointing: bool = False
    grad_clip: float = Field(default=1.0, gt=0)
    save_steps: int = Field(default=500, ge=1)
    save_total_limit: int | None = Field(default=2, ge=1)
    eval_steps: int = Field(default=200, ge=1)
    logging_steps: int = Field(default=10, ge=1)
    num_workers: int = Field(default=2, ge=0)
    deepspeed: str | None = Field(
        default=None,
        description="zero2, zero3 (configs shipped in fakefinder/tasks/dx_llava/deepspeed/) or a JSON path.",
    )
    num_processes: int = Field(
        default=1,
        ge=1,
        description="Processes, one per GPU, for a platform job (which "
        "launches them with torchrun); the CLI is launched with torchrun or deepspeed.",
    )


class DxLlavaLoraConfig(QuantizedLoraSection):
    """The language model's adapter (train.mode lora or qlora)."""

    r: int = Field(default=64, ge=1)
    alpha: int | None = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        default=None,
        description="Default: every linear layer of the language model (never the vision tower).",
    )
    double_quant: bool = True


class DxLlavaEvalConfig(_Section):
    text: bool = Field(
        default=True,
        description="`fakefinder evaluate`: generate answers and score the label "
        "parsed from them (false: the head only).",
    )
    answers: int | None = Field(
        default=None, ge=1, description="Generate answers for this many samples (default: all)."
    )


class DxLlavaConfig(_Section):
    model: DxLlavaModelConfig = Field(default_factory=DxLlavaModelConfig)
    data: DxLlavaDataConfig = Field(default_factory=DxLlavaDataConfig)
    lora: DxLlavaLoraConfig = Field(default_factory=DxLlavaLoraConfig)
    train: DxLlavaTrainConfig = Field(default_factory=DxLlavaTrainConfig)
    eval: DxLlavaEvalConfig = Field(default_factory=DxLlavaEvalConfig)
    max_new_tokens: int = Field(default=96, ge=1, description="Length of a generated explanation.")
    answer_prefix: dict[Literal["real", "fake"], str] | None = Field(
        default=None,
        description="Verdict first: each explanation starts with the words for the binary head's verdict "
        "(e.g. {real: Authentic, fake: Manipulated}, how make-data's answers start) and the language model "
        "writes the rest, so the text argues the head's verdict; none: the whole answer is generated.",
    )
