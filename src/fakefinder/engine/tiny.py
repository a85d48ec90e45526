"""Tiny stand-ins built offline from configs, for every kind: name `random:tiny` where a kind names its
base model (`model.name`, `llm.model.base`, `dx_llava.model.language_model` and `vision_tower`,
`object_detector.model.arch`, `diffusion.model.base`) and the kind builds a small, randomly initialised
model of the same family (a character tokenizer where a tokenizer is needed). `<section>.model.
random_config` replaces the tiny defaults, per part. They learn nothing useful: they exist so that
tests, demos and a quick run go through every step of a real run on a machine without a model hub."""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakefinder.config import ConfigError

RANDOM_TINY = "random:tiny"
SOURCE_NOTE = "fakefinder-source.json"  # what a base written once was made from
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]


def is_random(name: Any) -> bool:
    return name == RANDOM_TINY


def random_parts(
    random_config: dict | None, parts: tuple[str, ...], key: str, base: Any = RANDOM_TINY
) -> dict:
    """`random_config` checked: {part: {setting: value}} with each part one of `parts`, and given only
    when the base it changes is `random:tiny`. Every part is in the answer (empty: the tiny defaults)."""
    random_config = random_config or {}
    if random_config and not is_random(base):
        raise ConfigError(f"{key} is for {RANDOM_TINY!r}, not {base!r}")
    for name, settings in random_config.items():
        if name not in parts:
            raise ConfigError(f"{key}: unknown part {name!r} (one of {', '.join(parts)})")
        if not isinstance(settings, dict):
            raise ConfigError(f"{key}.{name}: must be a mapping of settings")
    return {name: dict(random_config.get(name) or {}) for name in parts}


def write_once(folder: str | Path, write: Callable[[Path], None], made_from: dict, marker: str) -> Path:
    """`write(folder)` run once: again only when the folder was made from something else (its
    SOURCE_NOTE) or lacks `marker`. Written aside and renamed when complete, so a killed run never
    leaves half a model behind."""
    folder = Path(folder)
    note = folder / SOURCE_NOTE
    if (folder / marker).is_file() and note.is_file() and json.loads(note.read_text()) == made_from:
        return folder
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write(partial)
    (partial / SOURCE_NOTE).write_text(json.dumps(made_from))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def build_char_tokenizer(folder: str | Path) -> Path:
    """A character-level fast tokenizer (printable ASCII + ChatML markers) saved to `folder`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {token: i for i, token in enumerate(SPECIAL + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL[4:],
    )
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_llama_config(vocab_size: int = 110, hidden: int = 32, layers: int = 2, heads: int = 4) -> dict:
    return {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": 512,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 3,
        "tie_word_embeddings": False,
    }


def tiny_clip_vision_config(image_size: int = 32, patch: int = 8, hidden: int = 32) -> dict:
    return {
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": patch,
        "projection_dim": hidden,
    }


def tiny_causal_lm(settings: dict, tokenizer: str | None, seed: int, key: str):
    """A tiny random LLaMA (`tiny_llama_config` sized to the tokenizer, with `settings` over it) and its
    tokenizer: `tokenizer` when given, else the character tokenizer."""
    import torch
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig, AutoModelForCausalLM

    from fakefinder.engine.language import load_tokenizer

    if tokenizer is None:
        with tempfile.TemporaryDirectory() as folder:
            tok = load_tokenizer(str(build_char_tokenizer(folder)))
    else:
        tok = load_tokenizer(tokenizer)
    spec = tiny_llama_config(vocab_size=len(tok))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(tok, name, None) is not None:
            spec[name] = getattr(tok, name)
    spec.update(settings)
    model_type = spec.pop("model_type", "llama")
    torch.manual_seed(seed)
    try:
        lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **spec))
    except (TypeError, ValueError, KeyError, StrictDataclassError) as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return lm, tok
