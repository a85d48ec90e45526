"""Tiny, randomly initialised DX-LLaVA parts built offline from configs: a character tokenizer and
small LLaMA / CLIP configs. For tests, smoke runs and demos on machines without a model hub."""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]


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
