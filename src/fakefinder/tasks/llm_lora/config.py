"""The `llm` config section: the base language model, the instruction data, the LoRA / QLoRA
adapter, training and evaluation of the `llm_lora` and `llm_qlora` kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fakefinder.config import QuantizedLoraSection, RunSection, Section

PROMPT_EXTENSIONS = (".jsonl", ".txt")  # the files predict reads prompts from


class LlmModelConfig(Section):
    base: str = Field(
        default="package:smollm2-135m-instruct",
        description="Any causal LM transformers loads: a hub id (meta-llama/Llama-2-7b-hf), a local folder, "
        "'package:smollm2-135m-instruct' (offline), or 'random:tiny' (a tiny random LLaMA with a character "
        "tokenizer, for tests and demos). Its code is never run (no trust_remote_code).",
    )
    gguf_file: str | None = Field(
        default=None,
        description="Load the base from this GGUF file in its folder "
        "(dequantised; QLoRA saves it once as safetensors in the run folder).",
    )
    tokenizer: str | None = Field(
        default=None, description="Default: the base model's (for 'random:tiny': a character tokenizer)."
    )
    random_config: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description="With base 'random:tiny': transformers config settings that replace the tiny "
        "defaults, under `language_model`.",
    )
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="Weights of the base: auto = the checkpoint's on GPU, fp32 on CPU."
    )


class LlmDataConfig(Section):
    """JSONL files: {"instruction", "input"?, "response"} or {"conversations": [{"role", "content"}, ...]}."""

    train_file: Path | None = Field(default=None, description="The JSONL file to train on.")
    val_file: Path | None = Field(
        default=None, description="Default: val_ratio of the training file, carved with `seed`."
    )
    test_file: Path | None = Field(default=None, description="Read by `fakefinder evaluate` only.")
    val_ratio: float = Field(default=0.1, ge=0, lt=1)
    seed: int = Field(default=0, description="Seeds the draw of the validation rows.")
    max_length: int = Field(
        default=1024,
        ge=8,
        description="Tokens per example; longer ones are cut at the end "
        "(counted and listed); one whose response would be cut away entirely is skipped.",
    )
    template: Literal["auto", "chatml", "alpaca"] = Field(
        default="auto",
        description="How turns are written: auto = the tokenizer's chat template, else chatml if "
        "the tokenizer knows <|im_start|>, else alpaca (### Instruction / ### Response).",
    )
    system_prompt: str | None = Field(
        default=None, description="A system turn put before every example that has none."
    )
    skip_invalid: bool = Field(
        default=False,
        description="A malformed line or one without a response: skip it "
        "(listed) instead of stopping with its file and line.",
    )


class LlmLoraConfig(QuantizedLoraSection):
    r: int = Field(default=8, ge=1)
    alpha: int | None = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="Layer names to adapt, or all-linear (every linear layer but the output head).",
    )
    use_4bit: bool = Field(
        default=False, description="QLoRA: the base in 4 bits (bitsandbytes), the adapter in full precision."
    )


class LlmTrainConfig(RunSection):
    output_dir: Path = Path("output/llm-lora")
    epochs: float = Field(default=3.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=4, ge=1)
    eval_batch_size: int | None = Field(default=None, ge=1)
    accumulate: int = Field(default=4, ge=1)
    lr: float = Field(default=2e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    grad_checkpointing: bool = False
    grad_clip: float = Field(default=1.0, gt=0)
    group_by_length: bool = Field(default=True, description="Batches of similar lengths (less padding).")
    save_steps: int = Field(default=200, ge=1)
    save_total_limit: int | None = Field(default=2, ge=1)
    eval_steps: int = Field(default=200, ge=1)
    logging_steps: int = Field(default=10, ge=1)


class LlmEvalConfig(Section):
    samples: int = Field(
        default=3, ge=0, description="Generations from held-out prompts logged at each evaluation."
    )
    max_new_tokens: int = Field(default=64, ge=1, description="Longest generated answer, in tokens.")
    answers: int | None = Field(
        default=None,
        ge=1,
        description="`fakefinder evaluate`: generate answers for this "
        "many examples (default: all) for exact-match accuracy.",
    )


class LlmConfig(Section):
    model: LlmModelConfig = Field(default_factory=LlmModelConfig)
    data: LlmDataConfig = Field(default_factory=LlmDataConfig)
    lora: LlmLoraConfig = Field(default_factory=LlmLoraConfig)
    train: LlmTrainConfig = Field(default_factory=LlmTrainConfig)
    eval: LlmEvalConfig = Field(default_factory=LlmEvalConfig)
