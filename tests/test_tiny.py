"""`random:tiny`: the one way every kind builds its tiny offline stand-in, and how it refuses misuse."""

from __future__ import annotations

import json

import pytest

from fakefinder.config import ConfigError, config_from_dict
from fakefinder.engine.tiny import (
    SOURCE_NOTE,
    build_char_tokenizer,
    random_parts,
    tiny_causal_lm,
    write_once,
)


def test_random_config_parts_are_checked_and_only_for_a_random_base():
    assert random_parts({"unet": {"a": 1}}, ("unet", "vae"), "k") == {"unet": {"a": 1}, "vae": {}}
    with pytest.raises(ConfigError, match=r"k: unknown part 'unte' \(one of unet, vae\)"):
        random_parts({"unte": {}}, ("unet", "vae"), "k")
    with pytest.raises(ConfigError, match=r"k.unet: must be a mapping"):
        random_parts({"unet": 3}, ("unet",), "k")
    with pytest.raises(ConfigError, match=r"k is for 'random:tiny', not 'meta-llama/Llama-2-7b-hf'"):
        random_parts({"language_model": {}}, ("language_model",), "k", base="meta-llama/Llama-2-7b-hf")


def test_a_tiny_lm_follows_its_tokenizer_and_takes_settings_over_the_defaults(tmp_path):
    lm, tokenizer = tiny_causal_lm({}, None, 0, "k")
    assert lm.config.vocab_size == len(tokenizer) and lm.config.pad_token_id == tokenizer.pad_token_id
    assert lm.config.num_hidden_layers == 2 and lm.config.model_type == "llama"
    wider, _ = tiny_causal_lm({"hidden_size": 48, "num_attention_heads": 6}, None, 0, "k")
    assert wider.config.hidden_size == 48
    again, _ = tiny_causal_lm({}, str(build_char_tokenizer(tmp_path / "tok")), 0, "k")
    assert all((a == b).all() for a, b in zip(lm.parameters(), again.parameters(), strict=True))  # seeded
    with pytest.raises(ConfigError, match="k: "):
        tiny_causal_lm({"hidden_size": 30, "num_attention_heads": 4, "head_dim": None}, None, 0, "k")


def test_write_once_writes_aside_and_again_only_for_other_settings(tmp_path):
    calls = []

    def write(folder):
        calls.append(folder.name)
        (folder / "config.json").write_text("{}")

    folder = write_once(tmp_path / "base", write, {"seed": 0}, "config.json")
    assert json.loads((folder / SOURCE_NOTE).read_text()) == {"seed": 0}
    write_once(tmp_path / "base", write, {"seed": 0}, "config.json")
    assert len(calls) == 1 and calls[0].startswith("base.partial-")  # written aside, then renamed
    write_once(tmp_path / "base", write, {"seed": 1}, "config.json")
    assert len(calls) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["base"]

    def fails(folder):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_once(tmp_path / "base", fails, {"seed": 2}, "config.json")
    assert json.loads((tmp_path / "base" / SOURCE_NOTE).read_text()) == {"seed": 1}  # the last good one stays


@pytest.mark.parametrize(
    ("old", "base_key", "part"),
    [
        ("llm.model.base_config", "llm.model.base", "language_model"),
        ("dx_llava.model.language_model_config", "dx_llava.model.language_model", "language_model"),
        ("dx_llava.model.vision_config", "dx_llava.model.vision_tower", "vision_tower"),
    ],
)
def test_an_older_random_config_is_read_as_random_tiny(old, base_key, part):
    section, model, key = old.split(".")
    tree = {
        "task": "llm_lora" if section == "llm" else "dx_llava",
        section: {model: {key: {"hidden_size": 16}}},
    }
    config = config_from_dict(tree)
    kind = getattr(config, section).model
    assert getattr(kind, base_key.split(".")[-1]) == "random:tiny"
    assert kind.random_config == {part: {"hidden_size": 16}}
    unset = config_from_dict({"task": tree["task"], section: {model: {key: None}}})
    assert getattr(unset, section).model.random_config is None  # a saved null stays nothing


def test_dx_llava_refuses_random_settings_for_a_part_that_is_not_random():
    config = config_from_dict(
        {
            "task": "dx_llava",
            "dx_llava": {"model": {"language_model": "random:tiny", "random_config": {"vision_tower": {}}}},
        }
    )
    assert config.dx_llava.model.random_settings("language_model") == {}
    config = config_from_dict(
        {"task": "dx_llava", "dx_llava": {"model": {"random_config": {"vision_tower": {"hidden_size": 8}}}}}
    )
    with pytest.raises(ConfigError, match=r"random_config.vision_tower is for vision_tower: random:tiny"):
        config.dx_llava.model.random_settings("language_model")
