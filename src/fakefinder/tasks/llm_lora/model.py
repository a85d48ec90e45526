"""The base language model with its LoRA adapter (peft): where the base comes from, the adapter
built on it (full precision, or on a 4-bit base for QLoRA), the artifact (`adapter/` peft loads,
`tokenizer/`, `model.json`), loading it back, and merging the adapter into a standalone model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from fakefinder.config import Config, ConfigError, config_to_yaml
from fakefinder.core.artifact import write_artifact
from fakefinder.engine.language import four_bit_config, load_causal_lm, load_tokenizer, resolve_source
from fakefinder.engine.tiny import is_random, random_parts, tiny_causal_lm, write_once
from fakefinder.tasks.llm_lora.config import LlmConfig
from fakefinder.tasks.llm_lora.data import set_template

log = logging.getLogger(__name__)

ADAPTER = "adapter"
MERGED = "merged_model"


def base_model(cfg: LlmConfig, work_dir: Path) -> dict:
    """Where the base and its tokenizer load from: {'source', 'gguf_file', 'tokenizer'}. A base
    that exists only as a config (a random model), or as a GGUF file (dequantised), is first
    written as a transformers folder in `work_dir/base_model`."""
    model = cfg.model
    parts = random_parts(model.random_config, ("language_model",), "llm.model.random_config", model.base)
    if is_random(model.base):

        def write(folder: Path) -> None:
            lm, tokenizer = tiny_causal_lm(
                parts["language_model"], model.tokenizer, cfg.train.seed, "llm.model.random_config"
            )
            lm.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        made_from = {
            "random_config": model.random_config,
            "tokenizer": model.tokenizer,
            "seed": cfg.train.seed,
        }
        folder = write_once(Path(work_dir) / "base_model", write, made_from, "config.json").resolve()
        return {"source": str(folder), "gguf_file": None, "tokenizer": str(folder)}
    source, gguf = resolve_source(model.base, model.gguf_file)
    tokenizer = model.tokenizer or source
    if gguf:  # transformers trains no GGUF-loaded model (nor quantises one to 4 bits): saved as a plain one

        def dequantised(folder: Path) -> None:
            lm = load_causal_lm(source, gguf, "fp32", key="llm.model.base")
            lm.hf_quantizer, lm.is_quantized = None, False
            if hasattr(lm.config, "quantization_config"):
                del lm.config.quantization_config
            lm.save_pretrained(folder)
            load_tokenizer(tokenizer, gguf if tokenizer == source else None).save_pretrained(folder)

        made_from = {"source": source, "gguf_file": gguf, "tokenizer": tokenizer}
        folder = write_once(Path(work_dir) / "base_model", dequantised, made_from, "config.json")
        return {
            "source": str(folder.resolve()),
            "gguf_file": None,
            "tokenizer": str(folder.resolve()),
            "dequantised_from": f"{source}/{gguf}",
        }
    return {"source": source, "gguf_file": gguf, "tokenizer": tokenizer}


def load_base(cfg: LlmConfig, base: dict):
    """(model, tokenizer, turn format) of the base, 4-bit when `use_4bit`."""
    lora = cfg.lora
    quantization = (
        four_bit_config(lora.quant_type, lora.double_quant, lora.compute_dtype) if lora.use_4bit else None
    )
    tokenizer = load_tokenizer(
        base["tokenizer"], base["gguf_file"] if base["tokenizer"] == base["source"] else None
    )
    template = set_template(tokenizer, cfg.data.template)
    model = load_causal_lm(base["source"], base["gguf_file"], cfg.model.dtype, quantization, "llm.model.base")
    return model, tokenizer, template


def add_adapter(model, cfg: LlmConfig):
    """The base frozen, a fresh LoRA adapter on the target modules (the 4-bit base prepared for
    training first: norms in fp32, inputs that carry gradients)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora, train = cfg.lora, cfg.train
    checkpointing = {"use_reentrant": False}
    if lora.use_4bit:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=train.grad_checkpointing,
            gradient_checkpointing_kwargs=checkpointing,
        )
    elif train.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        model.enable_input_require_grads()
    settings = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha or lora.r,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, settings)
    except ValueError as exc:
        raise ConfigError(f"llm.lora.target_modules={lora.target_modules}: {exc}") from exc


def build(cfg: LlmConfig, work_dir: Path) -> tuple:
    """(peft model, tokenizer, info) ready to train."""
    base = base_model(cfg, work_dir)
    model, tokenizer, template = load_base(cfg, base)
    model.config.use_cache = False  # no KV cache while training (it is turned back on to generate)
    model = add_adapter(model, cfg)
    info = {"base": base, "template": template, "quantized": cfg.lora.use_4bit}
    return model, tokenizer, info


def save_artifact(
    model,
    tokenizer,
    cfg: LlmConfig,
    info: dict,
    output: Path,
    kind: str,
    config: Config,
    training: dict | None = None,
) -> Path:
    """`adapter/` (what peft loads on the base), `tokenizer/` (with the turn format), `model.json`
    and, for people, `config.yaml`; a merged model writes `merged_model/` instead of `adapter/`. Staged
    beside `output` and swapped in whole."""
    merged = bool(info.get("merged"))
    architecture = {
        "base": info["base"],
        "template": info["template"],
        "quantized": bool(info.get("quantized")),
        "merged": merged,
        "lora": cfg.lora.model_dump(mode="json"),
        "max_length": cfg.data.max_length,
        "llm": cfg.model_dump(mode="json"),
    }

    def weights(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        if merged:  # the merged folder stands alone: model and tokenizer
            tokenizer.save_pretrained(folder)

    write_artifact(
        output,
        kind,
        json.loads(json.dumps(architecture, default=str)),
        [],
        {},
        training=training or {},
        extra={
            MERGED if merged else ADAPTER: weights,
            "tokenizer": tokenizer.save_pretrained,
            "config.yaml": lambda f: f.write_text(config_to_yaml(config)),
        },
    )
    return Path(output)


def read_artifact_config(path: Path) -> tuple[LlmConfig, dict, str]:
    """(the saved `llm` settings, model.json's architecture, kind), read tolerantly."""
    from fakefinder.config import section_from_saved
    from fakefinder.core.artifact import read_artifact

    artifact = read_artifact(path)
    if artifact.kind not in ("llm_lora", "llm_qlora"):
        raise ConfigError(f"{path}: holds a {artifact.kind} model, not a fine-tuned language model")
    meta = dict(artifact.architecture)
    cfg, ignored = section_from_saved(LlmConfig, meta.get("llm", {}), f"{path}/model.json", "llm")
    if ignored:
        log.warning("%s: settings this version does not know were ignored: %s", path, ignored)
    return cfg, meta, artifact.kind


def load(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, meta, kind) from an artifact: the adapter on its base (a QLoRA
    adapter on the same 4-bit base it was trained on), or a merged model."""
    from peft import PeftModel

    path = Path(path)
    cfg, meta, kind = read_artifact_config(path)
    tokenizer = load_tokenizer(str(path / "tokenizer"))
    if meta.get("merged"):
        model = load_causal_lm(str(path / MERGED), None, cfg.model.dtype, key=str(path))
    else:
        model = PeftModel.from_pretrained(_adapter_base(path, cfg, meta)[0], path / ADAPTER)
    if quantization_free(model):
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    model.config.use_cache = True
    return model, tokenizer, meta, kind


def _adapter_base(path: Path, cfg: LlmConfig, meta: dict):
    """(the base model an adapter artifact was trained on, its 4-bit quantization or None): a QLoRA
    adapter's base is loaded in 4 bits again, as it was trained."""
    lora = cfg.lora
    quantization = (
        four_bit_config(lora.quant_type, lora.double_quant, lora.compute_dtype)
        if meta.get("quantized")
        else None
    )
    base = meta["base"]
    model = load_causal_lm(
        base["source"],
        base.get("gguf_file"),
        cfg.model.dtype,
        quantization,
        key=f"{path}/model.json: base.source",
    )
    return model, quantization


def quantization_free(model) -> bool:
    """bitsandbytes places 4-bit weights itself; only a full-precision model is moved."""
    return not getattr(model, "is_loaded_in_4bit", False) and not getattr(
        getattr(model, "base_model", None), "is_loaded_in_4bit", False
    )


def merge(path: str | Path, output: str | Path) -> Path:
    """The adapter folded into its base: a standalone model at `output/merged_model` (a folder
    transformers loads on its own) whose logits equal the adapted model's, in an artifact of the
    same kind. A QLoRA adapter is merged into its 4-bit base dequantised (the weights it was
    trained on, in the compute dtype), never re-quantised after merging (that would round the
    adapter away)."""
    from peft import PeftModel

    path, output = Path(path), Path(output)
    cfg, meta, kind = read_artifact_config(path)
    if meta.get("merged"):
        raise ConfigError(f"{path}: is merged already (no adapter left)")
    base = meta["base"]
    model, quantization = _adapter_base(path, cfg, meta)
    if quantization is not None:
        model = model.dequantize()
    model = PeftModel.from_pretrained(model, path / ADAPTER).merge_and_unload()
    tokenizer = load_tokenizer(str(path / "tokenizer"))
    info = {"base": base, "template": meta.get("template"), "quantized": False, "merged": True}
    cfg = cfg.model_copy(deep=True)
    cfg.lora.use_4bit = False
    config = Config(task=kind, llm=cfg)
    return save_artifact(
        model,
        tokenizer,
        cfg,
        info,
        output,
        kind,
        config,
        {"merged_from": str(path), "quantized_base": bool(meta.get("quantized"))},
    )
