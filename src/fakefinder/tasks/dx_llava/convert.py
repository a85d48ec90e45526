"""LLaVA-1.5 checkpoints in both published formats, and the conversion between them.

* HF format (`llava-hf/llava-1.5-7b-hf`): a `LlavaConfig` (text_config + vision_config) and keys
  `language_model.model.*`, `language_model.lm_head.*`, `multi_modal_projector.linear_{1,2}.*`,
  `vision_tower.vision_model.*` (transformers >= 5 saves `model.language_model.*`, `lm_head.*`,
  `model.multi_modal_projector.*`, `model.vision_tower.*`; both are read).
* Original format (`liuhaotian/llava-v1.5-7b`): a LLaMA config with `mm_*` fields and keys
  `model.embed_tokens|layers|norm.*`, `lm_head.*`, `model.mm_projector.{0,2}.*` (the CLIP tower is
  not stored; it is `mm_vision_tower`, usually `openai/clip-vit-large-patch14-336`).

`split_llava_state` turns either into three parts named as fakefinder builds them: a causal LM
(`model.*`, `lm_head.*`), the projector (`0.*`, `2.*`, ... as an `nn.Sequential`) and a CLIP vision
model (its keys without the `vision_model.` prefix, which transformers versions disagree on).
`convert_original_to_hf` writes the original format as an HF one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from fakefinder.config import ConfigError

LLAVA_FILES = ["*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.jinja"]


def resolve_checkpoint(name: str | Path) -> Path:
    """A local folder as is; otherwise a hub repo id downloaded (or taken from the HF cache)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(name).startswith((".", "/")):
        raise ConfigError(f"LLaVA checkpoint {name}: not a folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name), allow_patterns=LLAVA_FILES))
    except Exception as exc:  # network, auth or unknown repo: say which and what to do
        raise ConfigError(
            f"LLaVA checkpoint {name!r}: cannot load it from the hub ({type(exc).__name__}: {exc}); "
            "download it and pass the local folder"
        ) from exc


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder (safetensors or PyTorch .bin, sharded or not)."""
    files = sorted(folder.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    if files:
        from safetensors.torch import load_file

        for file in files:
            state.update(load_file(str(file)))
        return state
    files = sorted(folder.glob("pytorch_model*.bin")) + sorted(folder.glob("model*.bin"))
    if not files:
        raise ConfigError(f"LLaVA checkpoint {folder}: no *.safetensors or pytorch_model*.bin weights")
    for file in files:
        state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"LLaVA checkpoint {folder}: config.json is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc


def is_original_format(config: dict) -> bool:
    return "text_config" not in config and any(key.startswith("mm_") for key in config)


_ORIGINAL_PROJECTOR = re.compile(r"^model\.mm_projector\.")
_HF_PROJECTOR = re.compile(r"^(model\.)?multi_modal_projector\.linear_(\d+)\.")


def split_llava_state(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{'lm': causal-LM keys, 'projector': nn.Sequential keys, 'vision': CLIP vision keys (no prefix)}."""
    parts: dict[str, dict[str, torch.Tensor]] = {"lm": {}, "projector": {}, "vision": {}}
    for key, value in state.items():
        if _ORIGINAL_PROJECTOR.match(key):
            parts["projector"][_ORIGINAL_PROJECTOR.sub("", key)] = value
        elif match := _HF_PROJECTOR.match(key):
            index = 2 * (int(match.group(2)) - 1)  # linear_1 -> 0, linear_2 -> 2 (1 is the GELU)
            parts["projector"][f"{index}." + key[match.end() :]] = value
        elif "vision_tower." in key:
            rest = key.split("vision_tower.", 1)[1]
            while rest.startswith(("vision_tower.", "vision_model.")):
                rest = rest.split(".", 1)[1]
            parts["vision"][rest] = value
        elif key.startswith("language_model.model."):
            parts["lm"]["model." + key[len("language_model.model.") :]] = value
        elif key.startswith("language_model.lm_head."):
            parts["lm"]["lm_head." + key[len("language_model.lm_head.") :]] = value
        elif key.startswith("model.language_model."):
            parts["lm"]["model." + key[len("model.language_model.") :]] = value
        elif key.startswith(("model.", "lm_head.")):
            parts["lm"][key] = value
        else:
            raise ConfigError(f"LLaVA checkpoint: key {key!r} belongs to no known part")
    return parts


def llava_configs(config: dict, vision_config: dict | None = None) -> dict:
    """{'text_config': dict with model_type, 'vision_config': dict or None, 'projector': type,
    'select_layer': int} from either format's config.json."""
    if is_original_format(config):
        text = {
            k: v
            for k, v in config.items()
            if not k.startswith("mm_")
            and k
            not in {
                "architectures",
                "model_type",
                "tune_mm_mlp_adapter",
                "freeze_mm_mlp_adapter",
                "image_aspect_ratio",
                "use_mm_proj",
                "mm_use_im_start_end",
                "mm_use_im_patch_token",
                "tokenizer_padding_side",
                "tokenizer_model_max_length",
                "unfreeze_mm_vision_tower",
            }
        }
        text["model_type"] = "llama"
        return {
            "text_config": text,
            "vision_config": vision_config,
            "vision_source": config.get("mm_vision_tower"),
            "projector": config.get("mm_projector_type", "linear"),
            "select_layer": int(config.get("mm_vision_select_layer", -2)),
        }
    text = dict(config["text_config"])
    text.setdefault("model_type", "llama")
    layer = config.get("vision_feature_layer", -2)
    return {
        "text_config": text,
        "vision_config": vision_config or config.get("vision_config"),
        "vision_source": None,
        "projector": "mlp2x_gelu",
        "select_layer": int(layer) if isinstance(layer, int) else -2,
    }


def load_llava(name: str | Path, vision_config: dict | None = None) -> dict:
    """Everything fakefinder needs from a LLaVA checkpoint of either format."""
    folder = resolve_checkpoint(name)
    config = read_config(folder)
    parts = split_llava_state(read_state_dict(folder))
    info = llava_configs(config, vision_config)
    return {
        "folder": folder,
        "original": is_original_format(config),
        **info,
        "lm_state": parts["lm"],
        "projector_state": parts["projector"],
        "vision_state": parts["vision"],
    }


def convert_original_to_hf(
    source: str | Path, output: str | Path, vision_config: dict | None = None, pad_vocab_to: int = 64
) -> Path:
    """Write an original-format LLaVA-1.5 checkpoint as an HF `LlavaForConditionalGeneration` folder.

    The `<image>` token is appended to the vocabulary (id = old vocab size) and the embedding and
    output matrices grow to a multiple of `pad_vocab_to` with the mean row, as llava-hf does. The CLIP
    tower's config comes from `vision_config` or `mm_vision_tower` on the hub; its weights are not part
    of the original checkpoint, so the HF folder is loaded with the tower from its own source.
    """
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, LlavaConfig

    folder = resolve_checkpoint(source)
    config = read_config(folder)
    if not is_original_format(config):
        raise ConfigError(f"{folder}: already in the HF format (it has text_config)")
    info = llava_configs(config, vision_config)
    if info["projector"] != "mlp2x_gelu":
        raise ConfigError(
            f"{folder}: projector {info['projector']!r} has no HF LLaVA equivalent (mlp2x_gelu only)"
        )
    parts = split_llava_state(read_state_dict(folder))
    if info["vision_config"] is None:
        info["vision_config"] = CLIPVisionConfig.from_pretrained(info["vision_source"]).to_dict()
    text = dict(info["text_config"])
    old_vocab = int(text["vocab_size"])
    new_vocab = -(-(old_vocab + 1) // pad_vocab_to) * pad_vocab_to
    out: dict[str, torch.Tensor] = {}
    for key, value in parts["lm"].items():
        if key in ("model.embed_tokens.weight", "lm_head.weight") and value.shape[0] == old_vocab:
            extra = value.float().mean(0, keepdim=True).to(value.dtype).expand(new_vocab - old_vocab, -1)
            value = torch.cat([value, extra])
        target = (
            "language_model.lm_head." + key[len("lm_head.") :]
            if key.startswith("lm_head.")
            else "language_model." + key
        )
        out[target] = value.contiguous()
    for key, value in parts["projector"].items():
        index, rest = key.split(".", 1)
        out[f"multi_modal_projector.linear_{int(index) // 2 + 1}.{rest}"] = value.contiguous()
    for key, value in parts["vision"].items():
        out["vision_tower." + key] = value.contiguous()
    text["vocab_size"] = new_vocab
    vision = dict(info["vision_config"])
    vision.pop("model_type", None)
    hf = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=old_vocab,
        vision_feature_layer=info["select_layer"],
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(output)
    save_file(out, str(output / "model.safetensors"), metadata={"format": "pt"})
    for tokenizer_file in (
        "tokenizer.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ):
        if (folder / tokenizer_file).is_file():
            (output / tokenizer_file).write_bytes((folder / tokenizer_file).read_bytes())
    return output
