"""Optional DeepSpeed for the classic trainer (`train.deepspeed: zero0 | zero1 | zero2 | file.json`).

The trainer keeps what it owns: its optimizer and lr schedule, autocast over fp32 weights (so EMA,
validation and `best.pt` see fp32 weights), and its own `last.pt`/`best.pt`. DeepSpeed owns the
backward pass, gradient reduction, clipping, the (partitioned) optimizer step and the optimizer
state, which it checkpoints per rank under `<output_dir>/deepspeed/<tag>`; `last.pt` names its tag.
ZeRO stage 3 is refused: it partitions the weights themselves, and detectors of this size fit whole
on one accelerator. ZeRO-2 with gradient accumulation is refused too: checked against DDP, DeepSpeed
0.19's stage-2 accumulation gave different gradients (ZeRO-0/1 with accumulation, and ZeRO-2
without it, match DDP).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from fakefinder.config import ConfigError

STAGES = {"zero0": 0, "zero1": 1, "zero2": 2}
FOLDER = "deepspeed"
# keys of a DeepSpeed JSON that would fight the trainer, and what the trainer uses instead
OWNED = {
    "optimizer": "the optimizer comes from train.optimizer / lr / weight_decay",
    "scheduler": "the lr schedule comes from train.scheduler / warmup_epochs",
    "fp16": "mixed precision comes from train.precision (autocast over fp32 weights)",
    "bf16": "mixed precision comes from train.precision (autocast over fp32 weights)",
    "torch_autocast": "mixed precision comes from train.precision (autocast over fp32 weights)",
}


def _enabled(section) -> bool:
    return not isinstance(section, dict) or bool(section.get("enabled", True))


def deepspeed_config(train) -> dict:
    """The DeepSpeed config dict for `train.deepspeed`, with batch size, accumulation and clipping
    taken from `train`. A value a JSON file sets differently from `train` is an error, not a guess."""
    value = train.deepspeed
    if value in STAGES:
        source, config = f"train.deepspeed={value}", {"zero_optimization": {"stage": STAGES[value]}}
    else:
        path = Path(value)
        source = str(path)
        if not path.is_file():
            raise ConfigError(
                f"train.deepspeed={value!r}: not zero0, zero1, zero2 or an existing DeepSpeed JSON file"
            )
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{path}: not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}"
            ) from None
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: a DeepSpeed config is a JSON object")
        for key, why in OWNED.items():
            if key in config and _enabled(config[key]):
                raise ConfigError(f"{path}: remove `{key}`: {why}")
    stage = int(config.get("zero_optimization", {}).get("stage", 0))
    if stage > 2:
        raise ConfigError(
            f"{source}: zero_optimization.stage={stage}: the classic trainer runs ZeRO stages 0-2; stage 3 "
            f"partitions "
            "the weights, which EMA, validation and checkpoints use whole (use zero2)"
        )
    if stage == 2 and train.accumulate > 1:
        raise ConfigError(
            f"{source}: ZeRO-2 with train.accumulate={train.accumulate}: under DeepSpeed 0.19 its stage-2 "
            f"gradient "
            "accumulation does not reproduce DDP's gradients in fakefinder's check; use zero1 (the optimizer "
            "state is split all the same) or accumulate: 1"
        )
    if train.precision == "fp16":
        raise ConfigError(
            "train.precision=fp16 with train.deepspeed: no loss scaling on this path; use bf16, or train "
            "without DeepSpeed (DDP scales fp16 losses)"
        )
    for key, ours in (
        ("train_micro_batch_size_per_gpu", train.batch_size),
        ("gradient_accumulation_steps", train.accumulate),
        ("gradient_clipping", float(train.grad_clip or 0.0)),
    ):
        given = config.get(key, "auto")
        if given != "auto" and given != ours:
            raise ConfigError(
                f'{source}: {key}={given} but the train config says {ours}; write "auto" or drop it'
            )
        config[key] = ours
    if config.get("train_batch_size") == "auto":
        del config["train_batch_size"]  # DeepSpeed derives it (and checks a given one against the world size)
    config.setdefault("steps_per_print", 2**31 - 1)  # the trainer reports progress itself
    # ZeRO-1/2 split the optimizer state element-wise, which is exact for both of the trainer's
    # optimizers (AdamW and SGD); DeepSpeed asks for this flag for any it did not ship itself
    config.setdefault("zero_allow_untested_optimizer", True)
    return config


def wrap(model, optimizer, config: dict):
    """A DeepSpeed engine around `model` whose optimizer steps are `optimizer`'s (partitioned)."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=config, dist_init_required=False
    )
    return engine


def step(engine) -> float | None:
    """`engine.step()`; at an optimizer step, returns the gradient norm that clipping saw (NaN when
    not clipping). ZeRO-1/2 report theirs; ZeRO-0 clips without keeping it, so it is measured here,
    on the reduced gradients, just before the step."""
    boundary = engine.is_gradient_accumulation_boundary()
    before = None
    if boundary and engine.zero_optimization_stage() == 0 and engine.gradient_clipping() > 0:
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        before = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
    engine.step()
    if not boundary:
        return None
    if before is not None:
        return before
    norm = engine.get_global_grad_norm()
    return float("nan") if norm is None else float(norm)


def save(engine, output_dir: Path, tag: str) -> None:
    """Every rank writes its optimizer partition (a collective call)."""
    engine.save_checkpoint(str(Path(output_dir) / FOLDER), tag=tag, client_state={}, save_latest=False)


def _plain_classes() -> tuple:
    """The data-only classes DeepSpeed 0.19 pickles into its ZeRO optimizer files."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return LossScaler, ZeroStageEnum, fragment_address


def vet(folder: Path) -> None:
    """DeepSpeed unpickles its checkpoint files freely; read each one first with the weights-only
    loader (tensors, plain values and DeepSpeed's three data classes), so a crafted file is refused
    before DeepSpeed runs any of it."""
    from fakefinder.core.checkpoint import load_checkpoint

    for file in sorted(Path(folder).rglob("*.pt")):
        load_checkpoint(file, allow=_plain_classes())


def load(engine, output_dir: Path, tag: str, checkpoint: Path) -> None:
    folder = Path(output_dir) / FOLDER
    if not (folder / tag).is_dir():
        raise FileNotFoundError(
            f"{checkpoint} was written by a DeepSpeed run whose optimizer state {folder / tag} "
            "is missing; resume from a copy that has it"
        )
    vet(folder / tag)
    loaded, _ = engine.load_checkpoint(
        str(folder), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if loaded is None:
        raise FileNotFoundError(f"DeepSpeed could not load {folder / tag} (named by {checkpoint})")


def prune(output_dir: Path, keep: set[str]) -> None:
    """Drop optimizer-state folders no checkpoint names any more (rank 0, after the names moved)."""
    folder = Path(output_dir) / FOLDER
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.is_dir() and entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
