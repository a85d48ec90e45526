"""The DX-LLaVA model: vision tower -> projector -> image tokens spliced into a causal LM, plus a
binary real/fake head; its build (full / LoRA / QLoRA, stage 1 or 2), save, load and LoRA merge.

Image positions are marked by `image_mask` rather than by a special vocabulary entry, so the
language model's vocabulary (and a LoRA adapter's base) is never resized.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fakefinder.config import Config, ConfigError, config_to_yaml
from fakefinder.core.artifact import write_artifact, write_model_json
from fakefinder.engine.language import (
    four_bit_config,
    linear_module_names,
    load_causal_lm,
    load_tokenizer,
    resolve_source,
)
from fakefinder.engine.tiny import is_random, tiny_causal_lm, write_once
from fakefinder.faces.regions import REGIONS
from fakefinder.tasks.dx_llava.config import DxLlavaConfig
from fakefinder.tasks.dx_llava.vision import VisionTower, build_vision_tower

log = logging.getLogger(__name__)

KIND = "dx_llava"


# ---------------------------------------------------------------------------------------------
# parts


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Sequential:
    """LLaVA projectors: `linear`, or `mlp{N}x_gelu` (N linear layers with GELU between); layer
    indices follow the original LLaVA naming (0, 2, 4, ...)."""
    if kind == "linear":
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(f"dx_llava.model.projector={kind!r}: use linear or mlpNx_gelu (e.g. mlp2x_gelu)")
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


class BinaryHead(nn.Module):
    """Linear(hidden, 512) -> ReLU -> Linear(512, 1): one real/fake logit."""

    def __init__(self, hidden: int, width: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class DxLlava(nn.Module):
    """Forward returns a dict: loss (weighted sum), lm_loss, binary_loss, binary_logits."""

    def __init__(
        self,
        language_model: nn.Module,
        vision_tower: VisionTower,
        projector: nn.Module,
        head: BinaryHead,
        head_source: str = "image_tokens",
        lm_loss_weight: float = 1.0,
        binary_loss_weight: float = 10.0,
        region_tokens: bool = False,
    ) -> None:
        super().__init__()
        self.language_model = language_model
        self.vision_tower = vision_tower
        self.projector = projector
        self.head = head
        self.head_source = head_source
        self.lm_loss_weight = lm_loss_weight
        self.binary_loss_weight = binary_loss_weight
        self.grid_tokens = vision_tower.count_tokens()
        self.region_tokens = region_tokens
        self.num_image_tokens = self.grid_tokens + (len(REGIONS) if region_tokens else 0)
        if region_tokens and round(self.grid_tokens**0.5) ** 2 != self.grid_tokens:
            raise ValueError(
                f"dx_llava.model.region_tokens needs a square grid of image tokens; the tower gives "
                f"{self.grid_tokens}"
            )

    @classmethod
    def from_parts(
        cls, language_model: nn.Module, vision_tower: VisionTower, projector: nn.Module, head: BinaryHead, cfg
    ) -> DxLlava:
        """The model with its head source and loss weights from a `dx_llava` config section."""
        return cls(
            language_model,
            vision_tower,
            projector,
            head,
            cfg.model.head_source,
            cfg.train.lm_loss_weight,
            cfg.train.binary_loss_weight,
            cfg.model.region_tokens,
        )

    # frozen towers stay in eval mode (no BatchNorm/dropout drift) whatever the trainer does
    def train(self, mode: bool = True):
        super().train(mode)
        if not any(p.requires_grad for p in self.vision_tower.parameters()):
            self.vision_tower.eval()
        return self

    @property
    def config(self):  # what HF utilities look for
        return self.language_model.config

    def _embed_layer(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def region_weights(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, regions, grid tokens): per image, the weights that average the grid tokens over each
        facial region, from the region map of the image the tower sees (`faces.regions`)."""
        from fakefinder.faces.regions import region_grid, region_map

        tower = self.vision_tower
        mean = torch.tensor(tower.mean).view(1, 3, 1, 1)
        std = torch.tensor(tower.std).view(1, 3, 1, 1)
        images = (pixel_values.detach().float().cpu() * std + mean).clamp(0, 1).mul(255).round()
        images = images.to(torch.uint8).permute(0, 2, 3, 1).numpy()
        side = round(self.grid_tokens**0.5)
        grids = [region_grid(region_map(image).labels, side) for image in images]
        return torch.from_numpy(np.stack(grids)).to(pixel_values.device)

    def image_tokens(self, pixel_values: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """The projected image tokens; `features`: the tower's tokens when already computed."""
        if features is None:
            tower_dtype = next(self.vision_tower.parameters()).dtype
            features = self.vision_tower(pixel_values.to(tower_dtype))
        if self.region_tokens:
            pooled = torch.bmm(self.region_weights(pixel_values).to(features.dtype), features)
            features = torch.cat([features, pooled], dim=1)
        projector_dtype = next(self.projector.parameters()).dtype
        return self.projector(features.to(projector_dtype))

    def embed(
        self,
        input_ids: torch.Tensor,
        image_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        features: torch.Tensor | None = None,
    ):
        """Token embeddings with the projected image tokens written at `image_mask` positions."""
        embeds = self._embed_layer()(input_ids.masked_fill(image_mask, 0))
        projected = self.image_tokens(pixel_values, features)
        counts = image_mask.sum(1)
        if (counts != projected.shape[1]).any():
            raise ValueError(f"each sample needs {projected.shape[1]} image positions, got {counts.tolist()}")
        embeds = embeds.clone()
        embeds[image_mask] = projected.reshape(-1, projected.shape[-1]).to(embeds.dtype)
        return embeds, projected

    def binary_logits(
        self,
        projected: torch.Tensor,
        hidden: torch.Tensor | None = None,
        prompt_end: torch.Tensor | None = None,
    ) -> torch.Tensor:
        head_dtype = next(self.head.parameters()).dtype
        if self.head_source == "last_prompt_token":
            if hidden is None or prompt_end is None:
                raise ValueError("head_source=last_prompt_token needs the LM hidden states and prompt_end")
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), prompt_end]
        else:
            pooled = projected.mean(1)
        return self.head(pooled.to(head_dtype))

    def forward(
        self,
        input_ids,
        attention_mask,
        image_mask,
        pixel_values,
        labels=None,
        binary_labels=None,
        prompt_end=None,
        **_,
    ) -> dict:
        embeds, projected = self.embed(input_ids, image_mask.bool(), pixel_values)
        want_hidden = self.head_source == "last_prompt_token"
        parts = self._decoder_and_head()
        if parts is not None:
            decoder, lm_head = parts
            hidden_all = decoder(
                inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state
            hidden = hidden_all if want_hidden else None
            lm_loss = self._answer_loss(hidden_all, lm_head, labels) if labels is not None else None
        else:  # models whose logits need more than the output layer (soft-capping, scaling)
            out = self.language_model(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                labels=labels,
                output_hidden_states=want_hidden,
                use_cache=False,
            )
            hidden = out.hidden_states[-1] if want_hidden else None
            lm_loss = out.loss if labels is not None else None
        logits = self.binary_logits(projected, hidden, prompt_end)
        result = {"binary_logits": logits}
        zero = logits.sum() * 0.0
        lm_loss = lm_loss if lm_loss is not None else zero
        binary_loss = zero
        if binary_labels is not None:
            known = binary_labels >= 0
            if known.any():
                binary_loss = F.binary_cross_entropy_with_logits(
                    logits[known].float(), binary_labels[known].float()
                )
        result["lm_loss"] = lm_loss
        result["binary_loss"] = binary_loss
        result["loss"] = self.lm_loss_weight * lm_loss + self.binary_loss_weight * binary_loss
        return result

    def _decoder_and_head(self):
        """(decoder, output layer) of the LM when logits are plainly `lm_head(hidden)`, else None."""
        lm = self.language_model
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        config = getattr(base, "config", None)
        if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
            return None
        get_decoder = getattr(base, "get_decoder", None)
        decoder = get_decoder() if get_decoder is not None else None
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        if decoder is None or head is None or decoder is base:
            return None
        return decoder, head

    @staticmethod
    def _answer_loss(hidden: torch.Tensor, lm_head: nn.Module, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy over the answer tokens only: the output layer runs on the
        positions that predict a labelled token, not on the whole sequence x vocabulary (the same
        mean as computing every logit, at a fraction of the time and memory)."""
        targets = labels[:, 1:]
        keep = targets != -100  # none kept: nan, like the full-logit loss (reported by the trainer)
        logits = lm_head(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), targets[keep])

    @torch.no_grad()
    def generate(
        self,
        input_ids,
        attention_mask,
        image_mask,
        pixel_values,
        max_new_tokens: int = 64,
        eos_token_id=None,
        pad_token_id=None,
        prompt_end=None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(generated token ids after the prompt, head logits); greedy decoding."""
        embeds, projected = self.embed(input_ids, image_mask.bool(), pixel_values)
        hidden = None
        if self.head_source == "last_prompt_token":
            out = self.language_model(
                inputs_embeds=embeds, attention_mask=attention_mask, output_hidden_states=True
            )
            hidden = out.hidden_states[-1]
        logits = self.binary_logits(projected, hidden, prompt_end)
        tokens = self.language_model.generate(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )
        return tokens, logits


# ---------------------------------------------------------------------------------------------
# language model and tokenizer sources


def lm_source(cfg: DxLlavaConfig) -> tuple[str, str | None]:
    """(folder or hub id, gguf file) of the language model."""
    return resolve_source(cfg.model.language_model, cfg.model.gguf_file)


def load_language_model(source: str, gguf_file: str | None, cfg: DxLlavaConfig, quantize: bool = False):
    quantization = (
        four_bit_config(cfg.lora.quant_type, cfg.lora.double_quant, cfg.lora.compute_dtype)
        if quantize
        else None
    )
    if quantize and gguf_file:
        raise ConfigError(
            "QLoRA needs a safetensors language model; a GGUF file is already quantised: use mode lora, or "
            "save the dequantised model and point language_model at it"
        )
    return load_causal_lm(source, gguf_file, cfg.model.dtype, quantization, "dx_llava.model.language_model")


# ---------------------------------------------------------------------------------------------
# build


def _materialise_base(cfg: DxLlavaConfig, base_dir: Path, llava: dict | None) -> str:
    """A language model that exists only inside a LLaVA checkpoint, or as `random:tiny`, is written
    once as a normal HF folder (`base_dir`, with its tokenizer), so QLoRA can quantise it while loading
    and a saved adapter always finds its base. Returns the folder."""

    def from_llava(folder: Path) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        text = dict(llava["text_config"])
        model_type = text.pop("model_type", "llama")
        config = AutoConfig.for_model(model_type, **text)
        with torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(config)
        state = llava["lm_state"]
        if "lm_head.weight" not in state and getattr(config, "tie_word_embeddings", False):
            state = dict(state, **{"lm_head.weight": state["model.embed_tokens.weight"]})
        missing, unexpected = lm.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if "rotary" not in k]
        if missing or unexpected:
            raise ConfigError(
                f"LLaVA checkpoint {llava['folder']}: the language model does not fit its config (missing "
                f"{missing[:5]}, unexpected {unexpected[:5]})"
            )
        lm.save_pretrained(folder)
        load_tokenizer(cfg.model.tokenizer or str(llava["folder"])).save_pretrained(folder)

    def random(folder: Path) -> None:
        settings = cfg.model.random_settings("language_model")
        lm, tokenizer = tiny_causal_lm(
            settings, cfg.model.tokenizer, cfg.train.seed, "dx_llava.model.random_config.language_model"
        )
        lm.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    if llava is not None:
        made_from = {"llava_checkpoint": str(llava["folder"]), "tokenizer": cfg.model.tokenizer}
        return str(write_once(base_dir, from_llava, made_from, "config.json"))
    made_from = {
        "random_config": cfg.model.random_settings("language_model"),
        "tokenizer": cfg.model.tokenizer,
        "seed": cfg.train.seed,
    }
    return str(write_once(base_dir, random, made_from, "config.json"))


def base_language_model(cfg: DxLlavaConfig, work_dir: Path, llava: dict | None) -> dict:
    """Where the LM and tokenizer come from: {'source', 'gguf_file', 'tokenizer'}."""
    if llava is not None or is_random(cfg.model.language_model):
        source = _materialise_base(cfg, work_dir / "base_language_model", llava)
        return {"source": source, "gguf_file": None, "tokenizer": source}
    source, gguf = lm_source(cfg)
    return {"source": source, "gguf_file": gguf, "tokenizer": cfg.model.tokenizer or source}


def _init_projector(projector: nn.Module, cfg: DxLlavaConfig, llava: dict | None) -> str:
    """Projector weights: a stage-1 file, else the LLaVA checkpoint's when shapes fit, else random."""
    from safetensors.torch import load_file

    if cfg.model.pretrained_projector is not None:
        path = Path(cfg.model.pretrained_projector)
        if not path.is_file():
            raise ConfigError(f"dx_llava.model.pretrained_projector: {path} does not exist")
        state = load_file(str(path))
        try:
            projector.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"{path}: does not fit projector {cfg.model.projector} ({exc})") from exc
        return f"stage-1 projector {path}"
    if llava is not None and llava["projector_state"]:
        state = llava["projector_state"]
        own = projector.state_dict()
        if set(state) == set(own) and all(state[k].shape == own[k].shape for k in own):
            projector.load_state_dict({k: v.float() for k, v in state.items()})
            return f"LLaVA checkpoint {llava['folder']}"
        log.warning(
            "the LLaVA projector does not fit this vision tower (%s); the projector starts random",
            {k: tuple(v.shape) for k, v in state.items()},
        )
    return "random"


def set_trainable(model: DxLlava, cfg: DxLlavaConfig) -> None:
    """Stage 1: the projector only. Stage 2: LM (full) or its LoRA weights, plus projector and head;
    the vision tower only when it is not frozen."""
    train = cfg.train
    model.requires_grad_(False)
    model.projector.requires_grad_(True)
    if train.stage == "projector":
        return
    model.head.requires_grad_(True)
    if not cfg.model.freeze_vision_tower:
        model.vision_tower.requires_grad_(True)
    if train.mode == "full":
        model.language_model.requires_grad_(True)
    else:
        for name, param in model.language_model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)


def build_model(cfg: DxLlavaConfig, work_dir: Path | None = None, for_training: bool = True):
    """(DxLlava, tokenizer, build info) from the config; `work_dir` receives a materialised base LM
    when one is needed (default: the run's output dir)."""
    from fakefinder.tasks.dx_llava.convert import load_llava

    work_dir = Path(work_dir or cfg.train.output_dir)
    llava = load_llava(cfg.model.llava_checkpoint) if cfg.model.llava_checkpoint else None
    base = base_language_model(cfg, work_dir, llava)
    qlora = for_training and cfg.train.stage == "finetune" and cfg.train.mode == "qlora"
    lm = load_language_model(base["source"], base["gguf_file"], cfg, quantize=qlora)
    tokenizer = load_tokenizer(
        base["tokenizer"], base["gguf_file"] if base["tokenizer"] == base["source"] else None
    )
    llava_parts = None
    if llava is not None:
        llava_parts = {
            "vision_config": llava["vision_config"],
            "vision_state": llava["vision_state"],
            "vision_source": llava["vision_source"],
        }
    tower = build_vision_tower(cfg.model, llava_parts)
    if cfg.model.measured_prompt:
        from fakefinder.tasks.dx_llava.measured import check_tower

        check_tower(tower)
    hidden = (
        lm.config.hidden_size
        if hasattr(lm.config, "hidden_size")
        else lm.get_input_embeddings().embedding_dim
    )
    projector = build_projector(cfg.model.projector, tower.hidden_size, hidden)
    projector_from = _init_projector(projector, cfg, llava)
    head = BinaryHead(hidden, cfg.model.head_hidden)
    if for_training and cfg.train.stage == "finetune" and cfg.train.mode in {"lora", "qlora"}:
        lm = add_lora(lm, cfg, qlora)
    if for_training and cfg.train.grad_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(lm, "enable_input_require_grads"):
            lm.enable_input_require_grads()
    model = DxLlava.from_parts(lm, tower, projector, head, cfg)
    if for_training:
        set_trainable(model, cfg)
    info = {
        "base": base,
        "projector_from": projector_from,
        "num_image_tokens": model.num_image_tokens,
        "image_size": tower.image_size,
        "mean": list(tower.mean),
        "std": list(tower.std),
        "vision_hidden": tower.hidden_size,
        "lm_hidden": hidden,
    }
    if getattr(tower, "arch", None):
        info["tower_arch"] = tower.arch  # rebuilds a saved detector tower without its source checkpoint
    if getattr(tower, "mask_spec", None):
        info["tower_mask"] = {k: v for k, v in tower.mask_spec.items() if k != "index"}
    return model, tokenizer, info


def add_lora(lm: nn.Module, cfg: DxLlavaConfig, quantized: bool):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=cfg.train.grad_checkpointing)
    targets = cfg.lora.target_modules or linear_module_names(lm)
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha or cfg.lora.r,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(lm, lora)
    except ValueError as exc:
        raise ConfigError(f"dx_llava.lora.target_modules={targets}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# save / load / merge


def _saved_parameters(model: DxLlava, cfg: DxLlavaConfig) -> list[nn.Parameter]:
    """The parameters `save_model` writes: projector, head, the language model (all of it in full
    mode, its trainable adapter weights otherwise) and the tower when it is saved."""
    params = list(model.projector.parameters()) + list(model.head.parameters())
    lm_params = model.language_model.parameters()
    params += list(lm_params) if cfg.train.mode == "full" else [p for p in lm_params if p.requires_grad]
    if _tower_is_saved(model.vision_tower):
        params += list(model.vision_tower.parameters())
    return params


def _tower_is_saved(tower: nn.Module) -> bool:
    """A tower that trains, or one that cannot be rebuilt from its source (random init), is saved."""
    return any(p.requires_grad for p in tower.parameters()) or getattr(tower, "random_init", False)


@contextmanager
def gathered_for_saving(model: DxLlava, cfg: DxLlavaConfig):
    """DeepSpeed ZeRO-3 keeps only a slice of each large parameter on each rank (an empty tensor in
    the module), so a plain state_dict would save empty weights. Inside this block the parameters
    that `save_model` writes are whole on every rank. Collective: every rank must enter it. Without
    ZeRO-3 (no partitioned parameter) it does nothing."""
    partitioned = [p for p in _saved_parameters(model, cfg) if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


def _save_tensors(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(path))


def _parts(model: DxLlava, tokenizer, cfg: DxLlavaConfig) -> dict:
    """The files a trained model is saved as (name -> writer of that file or folder). Stage 1:
    `mm_projector.safetensors` only. LoRA/QLoRA: `adapter/`, projector and head. Full:
    `language_model/` as well. A trained vision tower, and the tokenizer, always."""
    lm = model.language_model
    parts = {}
    if cfg.train.stage == "projector":
        parts["mm_projector.safetensors"] = lambda f: _save_tensors(model.projector, f)
    else:
        parts["projector.safetensors"] = lambda f: _save_tensors(model.projector, f)
        parts["head.safetensors"] = lambda f: _save_tensors(model.head, f)
        if hasattr(lm, "peft_config"):
            parts["adapter"] = lm.save_pretrained
        elif cfg.train.mode == "full":
            parts["language_model"] = lm.save_pretrained
    if _tower_is_saved(model.vision_tower):
        parts["vision_tower.safetensors"] = lambda f: _save_tensors(model.vision_tower, f)
    parts["tokenizer"] = tokenizer.save_pretrained
    return parts


def _description(cfg: DxLlavaConfig, info: dict, whole: Config) -> dict:
    """model.json's fields for a saved model: what `load_model` rebuilds it from."""
    stage, mode = cfg.train.stage, cfg.train.mode
    architecture = {
        "stage": stage,
        "mode": mode,
        "merged": bool(info.get("merged")),
        **{k: v for k, v in info.items() if k != "merged"},
        "dx_llava": cfg.model_dump(mode="json"),
    }
    preprocessing = {
        "input_size": info["image_size"],
        "mean": list(info["mean"]),
        "std": list(info["std"]),
        "aspect": cfg.data.image_aspect_ratio,
        "faces": whole.faces.model_dump(mode="json"),
        "frames": {
            "frames_per_video": whole.data.frames_per_video,
            "frame_stride": whole.data.frame_stride,
            "seek": whole.data.seek,
        },
    }
    return {
        "architecture": json.loads(json.dumps(architecture, default=str)),
        "classes": ["real", "fake"],
        "preprocessing": preprocessing,
        "threshold": 0.5,
        "training": {"stage": stage, "mode": mode},
    }


def save_model(
    model: DxLlava, tokenizer, cfg: DxLlavaConfig, info: dict, output: Path, full_config: Config | None = None
) -> Path:
    """Write what a run trained into `output` in place (a Trainer checkpoint folder): its parts
    (`_parts`), `model.json` and, for people, `config.yaml`. Under DeepSpeed ZeRO-3 call it inside
    `gathered_for_saving` (on every rank; rank 0 writes)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    whole = full_config or Config(task=KIND, dx_llava=cfg)
    parts = _parts(model, tokenizer, cfg)
    for name, write in parts.items():
        write(output / name)
    described = _description(cfg, info, whole)
    write_model_json(
        output,
        KIND,
        described["architecture"],
        described["classes"],
        described["preprocessing"],
        described["threshold"],
        described["training"],
        sorted(parts),
    )
    (output / "config.yaml").write_text(config_to_yaml(whole))
    return output


def save_artifact(
    model: DxLlava, tokenizer, cfg: DxLlavaConfig, info: dict, output: Path, full_config: Config | None = None
) -> Path:
    """The model artifact at `output`, written whole (staged beside it and swapped in): the same
    files as `save_model`."""
    whole = full_config or Config(task=KIND, dx_llava=cfg)
    parts = _parts(model, tokenizer, cfg)
    parts["config.yaml"] = lambda f: f.write_text(config_to_yaml(whole))
    write_artifact(output, KIND, extra=parts, **_description(cfg, info, whole))
    return Path(output)


def _load_small_parts(folder: Path, projector: nn.Module, head: nn.Module, tower: nn.Module) -> None:
    """Projector (or a stage-1 mm_projector), head and a saved tower, where the folder has them."""
    from safetensors.torch import load_file

    for name, module in (("projector", projector), ("head", head), ("vision_tower", tower)):
        file = folder / f"{name}.safetensors"
        if file.is_file():
            module.load_state_dict(load_file(str(file)))
    if (folder / "mm_projector.safetensors").is_file() and not (folder / "projector.safetensors").is_file():
        projector.load_state_dict(load_file(str(folder / "mm_projector.safetensors")))


def load_trained_weights(model: DxLlava, folder: Path) -> None:
    """Put a saved run's trained weights (adapter / LM / projector / head / tower) into `model`."""
    folder = Path(folder)
    _load_small_parts(folder, model.projector, model.head, model.vision_tower)
    adapter = folder / "adapter"
    if adapter.is_dir() and hasattr(model.language_model, "peft_config"):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file as load

        weights = adapter / "adapter_model.safetensors"
        set_peft_model_state_dict(model.language_model, load(str(weights)))
    full = folder / "language_model"
    if full.is_dir():
        from fakefinder.tasks.dx_llava.convert import read_state_dict

        state = read_state_dict(full)
        missing, unexpected = model.language_model.load_state_dict(state, strict=False)
        if unexpected:
            raise ConfigError(f"{full}: weights do not fit the language model ({unexpected[:5]})")


def read_checkpoint_config(path: Path) -> tuple[DxLlavaConfig, dict]:
    """The saved model's DX-LLaVA settings and its description (model.json's architecture, with
    `preprocessing` and `config` added), read tolerantly: settings renamed since are left out."""
    from fakefinder.config import section_from_saved
    from fakefinder.core.artifact import read_artifact

    artifact = read_artifact(path)
    if artifact.kind != KIND:
        raise ConfigError(f"{path}: holds a {artifact.kind} model, not a DX-LLaVA one")
    meta = dict(artifact.architecture)
    cfg, ignored = section_from_saved(
        DxLlavaConfig, meta.pop("dx_llava", {}), f"{path}/model.json", "dx_llava"
    )
    if ignored:
        log.warning("%s: settings this version does not know were ignored: %s", path, ignored)
    return cfg, {
        **meta,
        "image_size": artifact.preprocessing["input_size"],
        "mean": artifact.preprocessing["mean"],
        "std": artifact.preprocessing["std"],
        "preprocessing": artifact.preprocessing,
        "config": cfg,
    }


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """(DxLlava in eval mode, tokenizer, meta) from a saved checkpoint folder."""
    from peft import PeftModel

    path = Path(path)
    cfg, meta = read_checkpoint_config(path)
    base = meta["base"]
    if meta["mode"] == "full" and (path / "language_model").is_dir():
        lm = load_language_model(str(path / "language_model"), None, cfg)
    else:  # a QLoRA adapter is applied to the same 4-bit base it was trained on
        lm = load_language_model(base["source"], base.get("gguf_file"), cfg, quantize=meta["mode"] == "qlora")
    if (path / "adapter").is_dir():
        lm = PeftModel.from_pretrained(lm, path / "adapter")
    tokenizer = load_tokenizer(str(path / "tokenizer"))
    llava_parts = None
    if cfg.model.vision_tower == "llava":
        from fakefinder.tasks.dx_llava.convert import load_llava

        llava = load_llava(cfg.model.llava_checkpoint)
        llava_parts = {
            "vision_config": llava["vision_config"],
            "vision_state": llava["vision_state"],
            "vision_source": llava["vision_source"],
        }
    tower_cfg = cfg.model.model_copy(update={"image_size": meta["image_size"]})
    if meta.get("tower_arch") and (path / "vision_tower.safetensors").is_file():
        # a tower taken from a detector checkpoint: same architecture, weights from this folder
        tower_cfg = tower_cfg.model_copy(
            update={"vision_tower": f"timm:{meta['tower_arch']}", "vision_pretrained": False}
        )
    tower = build_vision_tower(tower_cfg, llava_parts)
    tower.mean, tower.std = tuple(meta["mean"]), tuple(meta["std"])
    if meta.get("tower_mask"):
        from fakefinder.tasks.dx_llava.vision import attach_mask_head

        tower.arch = meta.get("tower_arch")
        attach_mask_head(tower, meta["tower_mask"])
    projector = build_projector(cfg.model.projector, tower.hidden_size, meta["lm_hidden"])
    head = BinaryHead(meta["lm_hidden"], cfg.model.head_hidden)
    model = DxLlava.from_parts(lm, tower, projector, head, cfg)
    _load_small_parts(path, projector, head, tower)
    model.to(device).eval()
    model.requires_grad_(False)
    return model, tokenizer, meta


def merge_lora(path: str | Path, output: str | Path) -> Path:
    """Fold a LoRA adapter into its base LM and save a standalone checkpoint (mode full)."""
    model, tokenizer, meta = load_model(path)
    if not hasattr(model.language_model, "peft_config"):
        raise ConfigError(f"{path}: has no LoRA adapter to merge")
    model.language_model = model.language_model.merge_and_unload()
    cfg = meta["config"].model_copy(deep=True)
    cfg.train.mode = "full"
    info = {k: v for k, v in meta.items() if k not in {"stage", "mode", "merged", "preprocessing", "config"}}
    info["merged"] = True
    faces = meta["preprocessing"].get("faces") or {}
    frames = meta["preprocessing"].get("frames") or {}
    config = Config(
        task=KIND, dx_llava=cfg, faces=faces, data={k: v for k, v in frames.items() if v is not None}
    )
    return save_artifact(model, tokenizer, cfg, info, Path(output), config)
