"""LoRA training of a Stable Diffusion UNet (and, optionally, its text encoder) in the loop the
field uses (diffusers' own text-to-image LoRA recipe): images to VAE latents, noise at a random
timestep, the UNet's noise (or v) prediction against the target, min-SNR weighting, AdamW on the
adapter alone. Every random draw of a step comes from (seed, step), and data order and crops from
(seed, epoch), so a run resumed from a checkpoint goes on exactly as an unbroken one. Checkpoints
hold the adapter (safetensors), the optimizer and schedule (tensors only) and the step (JSON)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fakefinder.config import Config, ConfigError, renamed_flat
from fakefinder.core.checkpoint import load_checkpoint, save_checkpoint
from fakefinder.core.files import atomic_write_json
from fakefinder.core.results import TrainSummary
from fakefinder.engine.run import PRECISION_DTYPES, Run
from fakefinder.engine.tiny import is_random
from fakefinder.tasks.text_to_image_lora.config import DiffusionConfig
from fakefinder.tasks.text_to_image_lora.data import (
    CaptionedImages,
    collate,
    epoch_batches,
    read_folder,
    split_off,
)
from fakefinder.tasks.text_to_image_lora.model import (
    adapter_state,
    add_adapters,
    base_source,
    load_components,
    save_artifact,
    set_adapter_state,
    set_sampler,
)

log = logging.getLogger(__name__)
KIND = "text_to_image_lora"
RUN_FILES = ("checkpoints", "model", "samples")  # what shows that an output folder holds a run
STAGE = "diffusion train"


def read_splits(cfg: DiffusionConfig, events) -> tuple[list, list, dict]:
    """(training images, held-out images, what reading them found); skipped files warned by name."""
    data = cfg.data
    if data.path is None:
        raise ConfigError(
            "diffusion.data.path is required: a folder of images with captions (metadata.jsonl or same-name "
            ".txt files)"
        )
    items, report = read_folder(data.path, data)
    reports = {"train": report.to_dict()}
    if data.val_path is not None:
        held, held_report = read_folder(data.val_path, data)
        reports["val"] = held_report.to_dict()
    else:
        items, held = split_off(items, data.val_ratio, data.seed)
        reports["val"] = {
            "carved_from": str(data.path),
            "ratio": data.val_ratio,
            "seed": data.seed,
            "images": len(held),
        }
    for name, found in reports.items():
        problems = found.get("problems") or []
        if problems:
            shown = "; ".join(f"{p['file']}: {p['message']}" for p in problems[:10])
            events.warning(
                f"{name}: {len(problems)} file(s) left out ({shown}{'; ...' if len(problems) > 10 else ''})",
                "train",
            )
    return items, held, reports


def encode_prompts(parts: dict, captions: list[str], device) -> torch.Tensor:
    tokenizer = parts["tokenizer"]
    ids = tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    return parts["text_encoder"](ids, return_dict=False)[0]


def step_seed(seed: int, step: int, micro: int = 0) -> int:
    return (seed * 1_000_003 + step * 1009 + micro) % (2**63 - 1)


def denoising_loss(
    parts: dict,
    pixels: torch.Tensor,
    hidden: torch.Tensor,
    generator: torch.Generator | None,
    timesteps: torch.Tensor | None,
    snr_gamma: float | None,
    noise_offset: float = 0.0,
    reduce: bool = True,
) -> torch.Tensor:
    """The training objective on a batch: latents of `pixels`, noise and timesteps drawn from
    `generator` (or the given timesteps), the UNet's prediction against the schedule's target."""
    from diffusers.training_utils import compute_snr

    vae, unet, noise_schedule = parts["vae"], parts["unet"], parts["noise"]
    device = pixels.device
    latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample(generator) * vae.config.scaling_factor
    latents = latents.float()
    noise = torch.randn(latents.shape, generator=generator, device=device)
    if noise_offset:
        noise = noise + noise_offset * torch.randn(
            (latents.shape[0], latents.shape[1], 1, 1), generator=generator, device=device
        )
    if timesteps is None:
        timesteps = torch.randint(
            0,
            noise_schedule.config.num_train_timesteps,
            (latents.shape[0],),
            generator=generator,
            device=device,
        )
    timesteps = timesteps.long().to(device)
    noisy = noise_schedule.add_noise(latents, noise, timesteps)
    kind = noise_schedule.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = noise_schedule.get_velocity(latents, noise, timesteps)
    else:
        raise ConfigError(
            f"the base's noise schedule predicts {kind!r}; LoRA training supports epsilon and v_prediction"
        )
    prediction = unet(noisy.to(unet.dtype), timesteps, hidden.to(unet.dtype), return_dict=False)[0].float()
    losses = torch.nn.functional.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma is not None:
        snr = compute_snr(noise_schedule, timesteps)
        weights = torch.stack([snr, snr_gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
        weights = weights / snr if kind == "epsilon" else weights / (snr + 1)
        losses = losses * weights
    return losses.mean() if reduce else losses


@torch.no_grad()
def held_out_loss(
    parts: dict,
    images: CaptionedImages,
    timesteps: int,
    seed: int,
    device,
    batch_size: int = 4,
    autocast=contextlib.nullcontext,
) -> float | None:
    """Mean MSE (no SNR weighting) over the held-out images, each at `timesteps` timesteps spread
    over the schedule with noise from `seed`: the same draws for every model compared."""
    if len(images) == 0:
        return None
    total = parts["noise"].config.num_train_timesteps
    spread = torch.linspace(0, total - 1, timesteps).round().long()
    losses = []
    unet_mode, text_mode = parts["unet"].training, parts["text_encoder"].training
    parts["unet"].eval()
    parts["text_encoder"].eval()
    try:
        for start in range(0, len(images), batch_size):
            rows = collate([images[(0, i)] for i in range(start, min(len(images), start + batch_size))])
            pixels = rows["pixels"].to(device)
            with autocast():
                hidden = encode_prompts(parts, rows["captions"], device)
                for t in spread:
                    generator = torch.Generator(device).manual_seed(step_seed(seed, int(t), start))
                    step = torch.full((pixels.shape[0],), int(t))
                    losses.append(
                        denoising_loss(parts, pixels, hidden, generator, step, None, reduce=False).cpu()
                    )
    finally:
        parts["unet"].train(unet_mode)
        parts["text_encoder"].train(text_mode)
    return float(torch.cat(losses).mean())


# ---------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_dirs(output: Path) -> list[Path]:
    """The complete checkpoints of a run folder, oldest first (`state.json` is written last)."""
    found = [
        p
        for p in (Path(output) / "checkpoints").glob("step-*")
        if p.name[5:].isdigit() and (p / "state.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[5:]))


def run_fingerprint(cfg: DiffusionConfig, items: list) -> dict:
    """What a checkpoint's run was trained with, beyond its length: a resume with other settings (or
    other images and captions) would not go on as the run did, so it is refused."""
    d = cfg.data
    root = Path(d.path) if d.path is not None else Path()
    listing = "\n".join(f"{os.path.relpath(i.image, root)}\t{i.caption}" for i in items)
    keys = {
        "train": (
            "batch_size",
            "accumulate",
            "lr",
            "text_encoder_lr",
            "scale_lr",
            "scheduler",
            "warmup_steps",
            "weight_decay",
            "snr_gamma",
            "noise_offset",
            "seed",
        ),
        "data": ("resolution", "center_crop", "random_flip", "caption_dropout"),
    }
    found = {
        f"diffusion.{section}.{key}": getattr(getattr(cfg, section), key)
        for section, names in keys.items()
        for key in names
    }
    found.update({f"diffusion.lora.{k}": v for k, v in cfg.lora.model_dump(mode="json").items()})
    found["diffusion.model.base"] = cfg.model.base
    found["the training images and captions"] = hashlib.sha1(listing.encode()).hexdigest()[:16]
    return json.loads(json.dumps(found, default=str))


def check_fingerprint(folder: Path, saved: dict | None, now: dict) -> None:
    if saved is None:
        return
    for key, value in saved.items():
        (now_key,) = renamed_flat({key: value})
        if now_key != key:
            log.warning("%s (written by an earlier version): '%s' is called '%s' now", folder, key, now_key)
    saved = renamed_flat(saved)  # written before keys were renamed: compared under today's names
    changed = [
        f"{k}: {saved.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(set(saved) | set(now))
        if saved.get(k) != now.get(k)
    ]
    if changed:
        raise ConfigError(
            f"resume: {folder} was written with other settings ({'; '.join(changed[:8])}); resume with "
            "the run's own settings (its config.yaml), or start a new run (--overwrite or another output "
            "folder)"
        )


def write_checkpoint(
    output: Path,
    step: int,
    parts: dict,
    optimizer,
    schedule,
    scaler,
    history: list,
    cfg: DiffusionConfig,
    fingerprint: dict,
    recent: list[float],
) -> Path:
    from safetensors.torch import save_file

    root = Path(output) / "checkpoints"
    folder = root / f"step-{step:06d}"
    staging = root / f".step-{step:06d}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(adapter_state(parts["unet"]), str(staging / "unet_lora.safetensors"))
    if cfg.lora.train_text_encoder:
        save_file(adapter_state(parts["text_encoder"]), str(staging / "text_encoder_lora.safetensors"))
    save_checkpoint(
        staging / "optimizer.pt",
        {
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
        },
    )
    atomic_write_json(
        staging / "state.json",
        {"step": step, "history": history, "settings": fingerprint, "recent_losses": recent},
    )
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    for old in checkpoint_dirs(output)[: -cfg.train.save_total_limit]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def read_checkpoint(folder: Path, parts: dict, optimizer, schedule, scaler, cfg: DiffusionConfig) -> dict:
    from safetensors.torch import load_file

    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    set_adapter_state(parts["unet"], load_file(str(folder / "unet_lora.safetensors")), str(folder))
    text_file = folder / "text_encoder_lora.safetensors"
    if cfg.lora.train_text_encoder:
        if not text_file.is_file():
            raise ConfigError(
                f"resume: {folder} holds no text encoder adapter, but diffusion.lora.train_text_encoder "
                "is on (the run was started without it)"
            )
        set_adapter_state(parts["text_encoder"], load_file(str(text_file)), str(folder))
    elif text_file.is_file():
        raise ConfigError(
            f"resume: {folder} holds a text encoder adapter, but diffusion.lora.train_text_encoder is off"
        )
    saved = load_checkpoint(folder / "optimizer.pt")
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"resume: {folder}/optimizer.pt does not fit this run's adapter ({exc}); were the LoRA "
            "settings changed?"
        ) from None
    schedule.load_state_dict(saved["schedule"])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    return state


# ---------------------------------------------------------------------------------------------
# sample images


@torch.no_grad()
def write_samples(parts: dict, cfg: DiffusionConfig, folder: Path, device, dtype: torch.dtype) -> list[Path]:
    """The sample prompts at their fixed seeds, generated with the adapter as it is now, as PNGs in
    `folder` (prompt order; `index.json` lists prompt, seed and file)."""
    from diffusers import StableDiffusionPipeline

    s = cfg.sample
    if not s.prompts:
        return []
    pipeline = StableDiffusionPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=parts["unet"],
        scheduler=parts["sampler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    set_sampler(pipeline, s.scheduler)
    modes = parts["unet"].training, parts["text_encoder"].training
    parts["unet"].eval()
    parts["text_encoder"].eval()
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rows, written = [], []
    size = s.size or cfg.data.resolution
    try:
        for p, prompt in enumerate(s.prompts):
            for k in range(s.images_per_prompt):
                seed = s.seed + p * s.images_per_prompt + k
                generator = torch.Generator(device).manual_seed(seed)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    image = pipeline(
                        prompt,
                        negative_prompt=s.negative_prompt or None,
                        num_inference_steps=s.steps,
                        guidance_scale=s.guidance_scale,
                        height=size,
                        width=size,
                        generator=generator,
                    ).images[0]
                name = f"{p:02d}-{k:02d}.png"
                image.save(staging / name)
                rows.append({"prompt": prompt, "seed": seed, "file": name})
                written.append(folder / name)
    finally:
        parts["unet"].train(modes[0])
        parts["text_encoder"].train(modes[1])
    (staging / "index.json").write_text(json.dumps(rows, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return written


# ---------------------------------------------------------------------------------------------
# training


def train(config: Config, resume: bool | str = False, overwrite: bool = False, events=None) -> TrainSummary:
    """Train as configured inside the run block (`engine.run`: the folder's lock, a finished run
    refused unless resumed or `overwrite`, seeds, signals, device and precision, trackers)."""
    from fakefinder.tasks.registry import get_task

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "text_to_image_lora trains in one process (one GPU, or the CPU); launch without torchrun"
        )
    with Run(
        get_task(config.task), config, RUN_FILES, "a text-to-image LoRA run", resume, overwrite, events
    ) as run:
        return _train(config, run)


class EpochBatches:
    """Batch indices from batch number `start` (counted over all epochs) on, without end: each epoch's
    order from (seed, epoch)."""

    def __init__(self, count: int, batch_size: int, seed: int, start: int) -> None:
        self.count, self.batch_size, self.seed, self.start = count, batch_size, seed, start

    def __iter__(self):
        epoch, position = divmod(self.start, math.ceil(self.count / self.batch_size))
        while True:
            yield from epoch_batches(self.count, self.batch_size, self.seed, epoch)[position:]
            epoch, position = epoch + 1, 0


def _quiet_worker(_: int) -> None:
    """Loader workers leave SIGINT / SIGTERM to the trainer (it stops after the step and saves)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def batch_stream(dataset: CaptionedImages, batch_size: int, seed: int, start: int, workers: int):
    """The training batches in order from batch number `start`, loaded by `workers` processes (0: this
    one) that live for the whole run."""
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_sampler=EpochBatches(len(dataset), batch_size, seed, start),
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_quiet_worker if workers else None,
        prefetch_factor=2 if workers else None,
    )


def planned_steps(cfg: DiffusionConfig, images: int) -> int:
    t = cfg.train
    if t.epochs is None:
        return t.max_steps
    batches = math.ceil(images / t.batch_size)
    return max(1, math.ceil(t.epochs * batches / t.accumulate))


@dataclass
class _Fit:
    """What the loop carries from step to step."""

    parts: dict
    groups: list
    optimizer: torch.optim.Optimizer
    schedule: object
    scaler: torch.amp.GradScaler | None
    steps: int
    step: int = 0
    history: list = field(default_factory=list)
    recent: list = field(default_factory=list)  # losses of the steps not logged yet
    side: float = 0.0  # seconds spent on samples, held-out losses and checkpoints

    @property
    def params(self) -> list:
        return [p for group in self.groups for p in group["params"]]


def _frozen_dtype(cfg: DiffusionConfig, run) -> torch.dtype:
    """What the frozen weights are held in: the run's precision on a GPU (auto), else as configured."""
    if cfg.model.dtype == "auto":
        return PRECISION_DTYPES[run.precision] if run.device.type == "cuda" else torch.float32
    frozen = PRECISION_DTYPES.get(cfg.model.dtype, torch.float32)
    if frozen != torch.float32 and run.device.type != "cuda":
        raise ConfigError(f"diffusion.model.dtype={cfg.model.dtype} needs a CUDA GPU; use fp32 on the CPU")
    return frozen


def _set_up(cfg: DiffusionConfig, parts: dict, run, frozen: torch.dtype, images: int) -> _Fit:
    """Adapters on the frozen base (fp32 adapters), the optimizer over them, the schedule."""
    from diffusers.optimization import get_scheduler

    t = cfg.train
    torch.manual_seed(t.seed)
    add_adapters(parts, cfg)
    for name in ("vae", "text_encoder", "unet"):
        parts[name].to(run.device) if frozen == torch.float32 else parts[name].to(run.device, dtype=frozen)
    trained = [parts["unet"]] + ([parts["text_encoder"]] if cfg.lora.train_text_encoder else [])
    for model in trained:
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
    if t.grad_checkpointing:
        parts["unet"].enable_gradient_checkpointing()
        if cfg.lora.train_text_encoder:
            parts["text_encoder"].gradient_checkpointing_enable()
    parts["vae"].eval()
    parts["unet"].train()
    parts["text_encoder"].train(cfg.lora.train_text_encoder)
    scale = t.batch_size * t.accumulate if t.scale_lr else 1
    groups = [{"params": [p for p in parts["unet"].parameters() if p.requires_grad], "lr": t.lr * scale}]
    if cfg.lora.train_text_encoder:
        groups.append(
            {
                "params": [p for p in parts["text_encoder"].parameters() if p.requires_grad],
                "lr": (t.text_encoder_lr or t.lr) * scale,
            }
        )
    optimizer = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    steps = planned_steps(cfg, images)
    schedule = get_scheduler(
        t.scheduler, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=steps
    )
    scaler = torch.amp.GradScaler("cuda") if run.precision == "fp16" else None
    return _Fit(parts, groups, optimizer, schedule, scaler, steps)


def _resume(run, fit: _Fit, cfg: DiffusionConfig, fingerprint: dict) -> None:
    """The latest complete checkpoint (or the one --resume-from names) read into `fit`."""
    for leftover in (run.folder / "checkpoints").glob(".step-*.partial-*"):  # cut off by a kill while written
        shutil.rmtree(leftover, ignore_errors=True)
    chosen = run.checkpoint(lambda folder: (checkpoint_dirs(folder) or [None])[-1])
    if chosen is None:
        return
    if not (chosen / "state.json").is_file():
        raise ConfigError(f"resume: {chosen} is not a complete checkpoint (no state.json)")
    check_fingerprint(chosen, json.loads((chosen / "state.json").read_text()).get("settings"), fingerprint)
    state = read_checkpoint(chosen, fit.parts, fit.optimizer, fit.schedule, fit.scaler, cfg)
    fit.step, fit.history = int(state["step"]), list(state.get("history", []))
    fit.recent = list(state.get("recent_losses", []))
    run.events.log(f"step {fit.step} of {fit.steps} done", "train")


def _optimizer_step(fit: _Fit, cfg: DiffusionConfig, run, batches) -> tuple[float, float]:
    """One optimizer step over `accumulate` batches: (the summed loss, the gradient norm)."""
    t, device = cfg.train, run.device
    fit.optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for micro in range(t.accumulate):
        batch = next(batches)
        torch.manual_seed(step_seed(t.seed, fit.step, micro))  # dropout, if any
        generator = torch.Generator(device).manual_seed(step_seed(t.seed, fit.step, micro))
        with run.autocast():
            with torch.set_grad_enabled(cfg.lora.train_text_encoder):
                hidden = encode_prompts(fit.parts, batch["captions"], device)
            loss = (
                denoising_loss(
                    fit.parts,
                    batch["pixels"].to(device),
                    hidden,
                    generator,
                    None,
                    t.snr_gamma,
                    t.noise_offset,
                )
                / t.accumulate
            )
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {float(loss)} at step {fit.step + 1}; lower diffusion.train.lr or use "
                "fp32 (checkpoints before this step are intact)"
            )
        (fit.scaler.scale(loss) if fit.scaler is not None else loss).backward()
        loss_sum += float(loss.detach())
    if fit.scaler is not None:
        fit.scaler.unscale_(fit.optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(fit.params, t.grad_clip))
    skipped = False
    if fit.scaler is not None:
        before = fit.scaler.get_scale()
        fit.scaler.step(fit.optimizer)
        fit.scaler.update()
        skipped = fit.scaler.get_scale() < before  # an inf/NaN gradient: no update, the schedule waits
    else:
        fit.optimizer.step()
    if not skipped:
        fit.schedule.step()
    return loss_sum, grad_norm


def _after_step(
    fit: _Fit, cfg: DiffusionConfig, run, held_set, fingerprint: dict, grad_norm: float, per_epoch: int
) -> None:
    """What a step ends with: its logged row (and the held-out loss at an evaluation step), sample
    images at an evaluation step, a checkpoint at a save step, at the end and on a stop."""
    t, events, step = cfg.train, run.events, fit.step
    evaluation = step % t.eval_steps == 0 and step != fit.steps
    if step % t.logging_steps == 0 or step == fit.steps or evaluation:
        row = {
            "loss": sum(fit.recent) / len(fit.recent),
            "lr": fit.schedule.get_last_lr()[0],
            "grad_norm": grad_norm,
        }
        fit.recent = []
        if evaluation:
            aside = time.perf_counter()
            row["val_loss"] = held_out_loss(
                fit.parts,
                held_set,
                cfg.eval.timesteps,
                t.seed,
                run.device,
                max(4, t.batch_size),
                run.autocast,
            )
            fit.side += time.perf_counter() - aside
        epoch = (step * t.accumulate) / per_epoch
        fit.history.append({"step": step, "epoch": epoch, **row})
        events.metrics(
            "val" if evaluation else "train",
            row,
            step=step,
            total=fit.steps,
            epoch=round(epoch, 4),
            epochs=t.epochs,
        )
    aside = time.perf_counter()
    if evaluation:
        written = write_samples(
            fit.parts,
            cfg,
            run.folder / "samples" / f"step-{step:06d}",
            run.device,
            PRECISION_DTYPES[run.precision],
        )
        if written:
            events.log(f"step {step}: {len(written)} sample image(s) in {written[0].parent}", "train")
    if step % t.save_steps == 0 or step == fit.steps or run.stop.is_set():
        write_checkpoint(
            run.folder,
            step,
            fit.parts,
            fit.optimizer,
            fit.schedule,
            fit.scaler,
            fit.history,
            cfg,
            fingerprint,
            fit.recent,
        )
    fit.side += time.perf_counter() - aside


def _train(config: Config, run) -> TrainSummary:
    cfg: DiffusionConfig = config.diffusion
    t, events, output = cfg.train, run.events, run.folder
    items, held, reports = read_splits(cfg, events)
    frozen = _frozen_dtype(cfg, run)
    output.mkdir(parents=True, exist_ok=True)
    source = base_source(cfg, output)
    parts = load_components(source, cfg.model.revision, cfg.model.variant)
    run.start()  # only now: a config or base that fails to load never costs the old run
    fit = _set_up(cfg, parts, run, frozen, len(items))
    fingerprint = run_fingerprint(cfg, items)
    _resume(run, fit, cfg, fingerprint)
    dataset = CaptionedImages(items, cfg.data, t.seed)
    held_set = CaptionedImages(held, cfg.data, t.seed, train=False)
    per_epoch = math.ceil(len(items) / t.batch_size)
    trainable = sum(p.numel() for p in fit.params)
    total_params = sum(p.numel() for m in ("unet", "text_encoder", "vae") for p in parts[m].parameters())
    events.log(
        f"LoRA rank {cfg.lora.r} on {'a tiny random base' if is_random(cfg.model.base) else cfg.model.base}: "
        f"{trainable:,} trainable of {total_params:,} parameters; {len(items)} training images, {len(held)} "
        f"held out; {fit.steps} steps of {t.batch_size} x {t.accumulate}; {run.precision} on {run.device}",
        "train",
    )
    batches = iter(batch_stream(dataset, t.batch_size, t.seed, fit.step * t.accumulate, t.num_workers))
    running = events.stage(STAGE, total=fit.steps, step=fit.step)
    started, first_step = time.perf_counter(), fit.step
    try:
        while fit.step < fit.steps and not run.stop.is_set():
            loss, grad_norm = _optimizer_step(fit, cfg, run, batches)
            fit.step += 1
            fit.recent.append(loss)
            running.advance(1)
            _after_step(fit, cfg, run, held_set, fingerprint, grad_norm, per_epoch)
    finally:
        del batches  # the loader's worker processes end with their iterator
    events.end(running)
    seconds = time.perf_counter() - started
    done = fit.step - first_step
    summary = {
        "planned_steps": fit.steps,
        "side_seconds": fit.side,
        "precision": run.precision,
        "data": reports,
        "images_per_second": done * t.batch_size * t.accumulate / (seconds - fit.side)
        if done and seconds > fit.side
        else None,
        "parameters": {"trainable": trainable, "total": total_params},
        "train_loss": fit.history[-1]["loss"] if fit.history else None,
    }
    if fit.step < fit.steps:
        events.log(f"stopped at step {fit.step}: checkpoint saved (resume with --resume)", "train")
        return TrainSummary(
            KIND,
            output,
            None,
            "interrupted",
            steps=fit.step,
            seconds=seconds,
            history=fit.history,
            details={**summary, "eval": {}},
        )
    return _finish(config, run, fit, source, held, held_set, seconds, summary)


def _finish(config: Config, run, fit: _Fit, source, held: list, held_set, seconds: float, summary: dict):
    """The finished run: its held-out loss and final samples, the artifact, the summary."""
    cfg, t, output, events = config.diffusion, config.diffusion.train, run.folder, run.events
    val_loss = held_out_loss(
        fit.parts, held_set, cfg.eval.timesteps, t.seed, run.device, max(4, t.batch_size), run.autocast
    )
    written = write_samples(
        fit.parts, cfg, output / "samples" / "final", run.device, PRECISION_DTYPES[run.precision]
    )
    metrics = {"val_loss": val_loss, "held_out_images": len(held)}
    model_dir = save_artifact(
        fit.parts,
        cfg,
        source,
        output / "model",
        config,
        {
            "steps": fit.step,
            "train_loss": summary["train_loss"],
            "eval": metrics,
            "data": summary["data"],
            "samples": [str(p) for p in written],
        },
    )
    trained = TrainSummary(
        KIND,
        output,
        Path(model_dir),
        "completed",
        "val_loss" if val_loss is not None else None,
        val_loss,
        None,
        None,
        fit.step,
        seconds,
        fit.history,
        {**summary, "eval": metrics, "samples": [str(p) for p in written]},
    )
    events.result(
        "train",
        trained.to_dict(),
        f"trained {fit.step} steps in {seconds:.0f} s; held-out loss "
        f"{val_loss if val_loss is not None else float('nan'):.4f}; model: {model_dir}"
        + (f"; samples: {written[0].parent}" if written else ""),
    )
    return trained
