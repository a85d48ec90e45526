"""The training loop of the classify family (deepfake detectors today).

One config drives a laptop CPU run and a multi-GPU `torchrun` run alike. `last.pt` is the resume
state (model, optimizer, schedule, scaler, EMA, epoch and step, RNG states, config, class names and
the decision threshold fitted on validation), tensors and plain values only; the selected weights
go to the model artifact `model/` (safetensors + model.json), written by the task's `save_model`.
"""

from __future__ import annotations

import gc
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from fakefinder.config import Config, ConfigError
from fakefinder.core.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fakefinder.core.events import SILENT
from fakefinder.core.files import atomic_write
from fakefinder.core.process import flush_denormal
from fakefinder.core.results import TrainSummary
from fakefinder.engine import deepspeed_zero, distributed
from fakefinder.engine.metrics import is_better
from fakefinder.engine.run import Run
from fakefinder.tasks.classification.augment import build_train_transform
from fakefinder.tasks.classification.data import CropDataset, EpochSampler, opencv_single_threaded
from fakefinder.tasks.classification.losses import mask_loss
from fakefinder.tasks.classification.networks import with_tta
from fakefinder.tasks.classification.objectives import BinaryObjective, MulticlassObjective
from fakefinder.tasks.classification.optim import ModelEma, Schedule, build_optimizer
from fakefinder.tasks.classification.reporting import RunReporter, hardware_use

BACKUP_FILES = ("last.pt", "history.jsonl", "history.csv", "curves.png", "config.yaml")
ARTIFACT_DIR = "model"
# what a run leaves in its folder: finding any of them means the folder holds a run
RUN_FILES = (
    "last.pt",
    ARTIFACT_DIR,
    "history.jsonl",
    "history.csv",
    "curves.png",
    "tensorboard",
    "deepspeed",
)


class _Interrupted(Exception):
    pass


def _copy_folder(source: Path, target: Path) -> None:
    """Replace `target` by a copy of `source` (when there is one), never leaving half a folder."""
    if not source.is_dir():
        return
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)


@dataclass
class TrainData:
    """What a kind hands the loop: the rows to train and to validate on (`path` relative to `root`,
    `label` a class name, `dataset`; a deepfake manifest adds `group`, `frame_index`, ...), the class
    names in output order, and whether it is a binary detector (one logit and a fitted threshold)
    or an N-class model (softmax over `classes`)."""

    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    root: Path
    classes: list[str]
    binary: bool
    source: str  # where the rows came from, for messages
    failures: list[dict] = field(
        default_factory=list
    )  # inputs left out (path, reason): written to failures.csv


def model_info(config: Config, model, num_outputs: int = 1) -> dict:
    mean = config.model.mean or model.pretrained_cfg.get("mean") or (0.485, 0.456, 0.406)
    std = config.model.std or model.pretrained_cfg.get("std") or (0.229, 0.224, 0.225)
    return {
        "name": config.model.name,
        "arch": model.arch,
        "frequency": config.model.frequency,
        "image_size": config.model.image_size,
        "mean": list(mean),
        "std": list(std),
        "dropout": config.model.dropout,
        "mask_head": config.model.mask_head,
        "mask_stride": config.model.mask_stride,
        "num_outputs": num_outputs,
    }


def build_model(config: Config, num_outputs: int = 1):
    from fakefinder.tasks.classification.model import create

    return create(
        config.model.name,
        pretrained=config.model.pretrained,
        dropout=config.model.dropout,
        frequency=config.model.frequency,
        drop_path=config.model.drop_path,
        mask_head=config.model.mask_head,
        mask_stride=config.model.mask_stride,
        num_classes=num_outputs,
    )


def _deepfake_only(config: Config) -> list[str]:
    """Settings that need a binary real/fake detector."""
    found = []
    if config.train.mask_loss > 0:
        found.append("train.mask_loss")
    if config.augment.sbi or config.augment.sbi_reals_only:
        found.append("augment.sbi / augment.sbi_reals_only")
    if config.train.sampler == "paired":
        found.append("train.sampler=paired")
    return found


class Trainer:
    def __init__(self, run, data: TrainData, save_model=None) -> None:
        self.run = run  # the run block: folder, lock, seed, signals, device, precision, events
        self.config = run.config
        self.kind = run.kind.name
        self.data = data
        self.resume = run.resume
        self.save_model = (
            save_model  # fn(folder, weights, state): writes the artifact of the selected weights
        )
        self.events = run.events
        self.output_dir = run.folder
        self.stop_reason = "completed"

    # ----------------------------------------------------------------------------------------
    def setup(self) -> None:
        config, train = self.config, self.config.train
        from fakefinder.tasks.classification.model import resolve

        resolve(config.model.name)  # unknown names (and a bad DeepSpeed config) fail before any data is read
        ds_config = deepspeed_zero.deepspeed_config(train) if train.deepspeed else None
        self.dist, self.device = distributed.setup(str(self.run.device), group=ds_config is not None)
        self._check_rows()
        self._build_model()
        self._build_data()
        self._build_optimization(ds_config)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_metric, self.best_epoch, self.bad_epochs = None, None, 0
        self.threshold = 0.5 if self.data.binary else None
        self.history: list[dict] = []
        self.run.start()  # set-up passed: --overwrite clears the old run only now
        if self.dist.is_main:
            self._list_failures()
        self._restore()
        if not self.dist.is_main:
            self.events = SILENT
        self.reporter = RunReporter(
            self.output_dir, train, self.dist.is_main, self.events, self.steps_per_epoch * train.epochs
        )
        self.reporter.history = self.history

    def _check_rows(self) -> None:
        """The training and validation rows, refused when empty; the objective fitted to the labels."""
        config, train, data = self.config, self.config.train, self.data
        train_rows, val_rows = data.train_rows, data.val_rows
        if not data.binary and _deepfake_only(config):
            raise ConfigError(
                f"{', '.join(_deepfake_only(config))}: for binary real/fake detectors only, not an N-class "
                f"model"
            )
        if train.val_max_samples and len(val_rows) > train.val_max_samples:
            val_rows = val_rows.sample(n=train.val_max_samples, random_state=train.seed).reset_index(
                drop=True
            )
        if len(train_rows) == 0:
            raise ConfigError(
                f"no training rows (split 'train') in {data.source} for datasets {train.datasets}"
            )
        if len(val_rows) == 0:
            raise ConfigError(f"no validation rows (split 'val') in {data.source}")
        self.val_rows = val_rows
        objective = BinaryObjective if data.binary else MulticlassObjective
        train_labels = np.array([data.classes.index(label) for label in train_rows.label], dtype=np.int64)
        self.objective = objective(train, train_labels, data.classes)

    def _build_model(self) -> None:
        train = self.config.train
        self.model = build_model(self.config, self.objective.num_outputs)
        self.info = model_info(self.config, self.model, self.objective.num_outputs)
        if train.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.model.to(self.device)
        self.memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        if train.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _build_data(self) -> None:
        """Datasets, the epoch sampler and the training loader; steps per epoch."""
        config, train, data = self.config, self.config.train, self.data
        train_rows = data.train_rows
        size, mean, std = self.info["image_size"], self.info["mean"], self.info["std"]
        sbi = config.augment.sbi if config.augment.sbi or config.augment.sbi_reals_only else 0.0
        if config.augment.sbi_reals_only and not sbi:
            sbi = 0.5
        self.train_set = CropDataset(
            train_rows,
            data.root,
            size,
            mean,
            std,
            build_train_transform(config.augment),
            sbi=sbi,
            masks=train.mask_loss > 0,
            mask_threshold=train.mask_threshold,
            classes=data.classes,
        )
        if train.mask_loss > 0:
            known = int((self.train_set.partners >= 0).sum())
            fakes = int(self.train_set.labels.sum())
            if fakes and not known and not sbi:
                raise ConfigError(
                    "train.mask_loss needs mask targets: no training fake has a real partner in its identity "
                    "group (manifest column `group`) and augment.sbi is 0"
                )
            self._say(f"mask supervision: {known} of {fakes} training fakes have an aligned real partner")
        self.val_set = CropDataset(self.val_rows, data.root, size, mean, std, classes=data.classes)
        self.sampler = EpochSampler(
            self.train_set.labels,
            list(train_rows.dataset),
            train.sampler,
            train.epoch_size,
            train.seed,
            self.dist.rank,
            self.dist.world,
            groups=list(train_rows.group) if "group" in train_rows else None,
        )
        per_rank = (train.epoch_size or len(train_rows)) // self.dist.world
        self.batches_per_epoch = per_rank // train.batch_size
        if self.batches_per_epoch < train.accumulate:
            raise ConfigError(
                f"train.batch_size={train.batch_size} x accumulate={train.accumulate} is more than one epoch "
                f"({per_rank} rows per process)"
            )
        self.steps_per_epoch = self.batches_per_epoch // train.accumulate
        loader_seed = torch.Generator().manual_seed(train.seed)  # keeps the global RNG untouched
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=train.batch_size,
            sampler=self.sampler,
            num_workers=train.num_workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            generator=loader_seed,
            persistent_workers=False,
        )

    def _build_optimization(self, ds_config: dict | None) -> None:
        """Optimizer, schedule, loss scaler, EMA and the wrapped network (DeepSpeed, DDP, compiled)."""
        train = self.config.train
        self.optimizer = build_optimizer(self.model, train)
        self.schedule = Schedule(train, self.steps_per_epoch, plateau_patience=2)
        self.autocast_dtype = self.run.autocast_dtype
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        self.ema = ModelEma(self.model, train.ema) if train.ema else None
        self.net: nn.Module = self.model
        self.engine = None  # DeepSpeed's, when train.deepspeed is set
        self.ds_tags: dict[str, str] = {}  # checkpoint name -> DeepSpeed tag holding its optimizer state
        if ds_config is not None:
            if train.compile:
                raise ConfigError("train.compile does not go with train.deepspeed: choose one")
            self.engine = self.net = deepspeed_zero.wrap(self.model, self.optimizer, ds_config)
        elif self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if train.compile:  # the training forward only: checkpoints and validation use the plain module
            self.net = torch.compile(self.net)

    # ----------------------------------------------------------------------------------------
    def _last_state(self, folder: Path) -> Path | None:
        """The run's last.pt, or its backup copy brought back into the run folder first."""
        path = folder / "last.pt"
        backup = self.config.train.backup_dir
        if not path.is_file() and backup and (Path(backup) / "last.pt").is_file():
            if self.dist.is_main:  # restore the run from its backup copy
                if (Path(backup) / deepspeed_zero.FOLDER).is_dir():
                    shutil.copytree(
                        Path(backup) / deepspeed_zero.FOLDER,
                        folder / deepspeed_zero.FOLDER,
                        dirs_exist_ok=True,
                    )
                for name in BACKUP_FILES:
                    if (Path(backup) / name).is_file():
                        shutil.copy2(Path(backup) / name, folder / name)
                _copy_folder(Path(backup) / ARTIFACT_DIR, folder / ARTIFACT_DIR)
            distributed.barrier(self.dist)
        return path if path.is_file() else None

    def _restore(self) -> None:
        path = self.run.checkpoint(self._last_state)
        if path is None:
            return  # nothing to resume: a fresh run
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        state = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(state["model"])
        tag = state.get("deepspeed")
        if self.engine is not None and not tag:
            raise ConfigError(f"{path} was written without DeepSpeed: resume it with train.deepspeed unset")
        if self.engine is None and tag:
            raise ConfigError(
                f"{path} keeps its optimizer state in DeepSpeed's "
                f"{path.parent / deepspeed_zero.FOLDER / tag}: "
                "resume it with train.deepspeed set"
            )
        if self.engine is not None:
            deepspeed_zero.load(self.engine, path.parent, tag, path)
            self.ds_tags = dict(state.get("deepspeed_tags") or {})
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.step_in_epoch, self.global_step = (
            state["epoch"],
            state["step_in_epoch"],
            state["global_step"],
        )
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.bad_epochs, self.threshold = state["bad_epochs"], state["threshold"]
        self.history = state["history"]
        set_rng_state(state["rng"][min(self.dist.rank, len(state["rng"]) - 1)])
        if self.dist.is_main:
            self._say(
                f"resumed from {path}: epoch {self.epoch}, step {self.step_in_epoch}/{self.steps_per_epoch}"
            )

    def _checkpoint(self) -> dict:
        rngs = distributed.gather_objects(self.dist, rng_state())
        return {
            "model": self.model.state_dict(),
            "optimizer": None if self.engine is not None else self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "rng": rngs,
            "config": self.config.model_dump(mode="json"),
            "class_names": list(self.data.classes),
            "threshold": self.threshold,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "model_info": self.info,
            "world_size": self.dist.world,
        }

    def save(self, name: str = "last.pt", state: dict | None = None) -> None:
        state = state or self._checkpoint()  # every rank joins the RNG gather
        if self.engine is not None:  # every rank writes its optimizer partition, under a new tag
            tag = f"{Path(name).stem}-step{self.global_step}"
            deepspeed_zero.save(self.engine, self.output_dir, tag)
            distributed.barrier(self.dist)  # every partition is on disk before a checkpoint names the tag
            self.ds_tags[name] = tag
            state = {**state, "deepspeed": tag, "deepspeed_tags": dict(self.ds_tags)}
        if self.dist.is_main:
            save_checkpoint(self.output_dir / name, state)
            if self.engine is not None:  # only now is the previous tag unreferenced
                deepspeed_zero.prune(self.output_dir, set(self.ds_tags.values()))
        distributed.barrier(self.dist)

    def _backup(self) -> None:
        target = self.config.train.backup_dir
        if not target or not self.dist.is_main:
            return
        target = Path(target)
        target.mkdir(parents=True, exist_ok=True)
        for tag in self.ds_tags.values():  # optimizer state first: the copied checkpoints name it
            copy = target / deepspeed_zero.FOLDER / tag
            if not copy.is_dir():
                partial = copy.with_name(f".{tag}.partial")
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(self.output_dir / deepspeed_zero.FOLDER / tag, partial)
                partial.replace(copy)
        if self.engine is not None:
            deepspeed_zero.prune(target, set(self.ds_tags.values()))
        for name in BACKUP_FILES:
            source = self.output_dir / name
            if source.is_file():
                tmp = target / f".{name}.partial"
                shutil.copy2(source, tmp)
                tmp.replace(target / name)
        _copy_folder(self.output_dir / ARTIFACT_DIR, target / ARTIFACT_DIR)

    def _say(self, message: str) -> None:
        if self.dist.is_main:
            self.events.log(message, "train")

    # ----------------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _train_epoch(self) -> dict:
        train = self.config.train
        self.net.train()
        self.sampler.set_epoch(self.epoch, start=self.step_in_epoch * train.accumulate * train.batch_size)
        losses, parts_sum, seen = [], {}, 0
        self._wait, started = 0.0, time.perf_counter()
        stage = self.events.stage(
            f"epoch {self.epoch + 1}/{train.epochs}", total=self.steps_per_epoch, step=self.step_in_epoch
        )
        with opencv_single_threaded():
            batches = iter(self.train_loader)
        self.optimizer.zero_grad(set_to_none=True)
        while self.step_in_epoch < self.steps_per_epoch:
            lr = self.schedule.apply(self.optimizer, self.global_step)
            ds_norm = None
            for micro in range(train.accumulate):
                loss, ds_norm = self._micro_step(batches, last=micro == train.accumulate - 1)
                losses.append(loss)
                for k, v in self.objective.parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v
                seen += 1
            grad_norm = self._optimizer_step(ds_norm)
            self.step_in_epoch += 1
            self.global_step += 1
            stage.advance(loss=float(np.mean(losses[-20:])), lr=lr)
            if self.global_step % train.logging_steps == 0:
                self.reporter.step(
                    self.global_step,
                    self.epoch + self.step_in_epoch / self.steps_per_epoch,
                    {
                        "loss": losses[-1],
                        "lr": lr,
                        "grad_norm": grad_norm,
                        **{f"loss_{k}": v / seen for k, v in parts_sum.items()},
                    },
                )
            if train.save_steps and self.global_step % train.save_steps == 0:
                self.save("last.pt")
            if self.run.should_stop():
                raise _Interrupted
            if train.max_steps and self.global_step >= train.max_steps:
                self.stop_reason = "max_steps"
                break
        self.events.end(stage)
        elapsed = time.perf_counter() - started
        totals = distributed.gather_objects(self.dist, (sum(losses), len(losses)))
        return {
            "train_loss": sum(t[0] for t in totals) / max(1, sum(t[1] for t in totals)),
            **{f"train_loss_{k}": v / max(1, seen) for k, v in parts_sum.items()},
            "epoch_seconds": elapsed,
            "data_wait_pct": 100 * self._wait / max(elapsed, 1e-9),
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def _micro_step(self, batches, last: bool) -> tuple[float, float | None]:
        """Forward and backward of one micro-batch: its loss, and DeepSpeed's gradient norm if it stepped."""
        train, model, engine = self.config.train, self.net, self.engine
        t0 = time.perf_counter()
        images, labels, *masks = next(batches)
        self._wait += time.perf_counter() - t0
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        labels = labels.to(self.device, non_blocking=True)
        ds_norm = None
        sync = nullcontext() if (last or not self.dist.enabled or engine) else model.no_sync()
        with sync:
            with self._autocast():
                out = model(images, return_mask=True) if masks else model(images)
            logits, mask_logits = out if masks else (out, None)
            loss = self.objective.loss(logits, labels)
            if masks:
                target, valid = (m.to(self.device, non_blocking=True) for m in masks)
                part = mask_loss(mask_logits, target, valid)
                self.objective.parts["mask"] = float(part.detach())
                loss = loss + train.mask_loss * part
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at epoch {self.epoch + 1} step {self.step_in_epoch + 1} (parts: "
                    f"{self.objective.parts}); lower train.lr or check the data"
                )
            if engine is not None:  # DeepSpeed divides by the accumulation steps and steps at the last
                engine.backward(loss)
                ds_norm = deepspeed_zero.step(engine)
            else:
                self.scaler.scale(loss / train.accumulate).backward()
        return float(loss.detach()), ds_norm

    def _optimizer_step(self, ds_norm: float | None) -> float:
        """Clip, step and update the EMA after the last micro-batch; the gradient norm (nan: not clipped)."""
        if self.engine is not None:  # clipped and stepped inside engine.step()
            grad_norm = float("nan") if ds_norm is None else ds_norm
        else:
            clip = self.config.train.grad_clip
            if clip:
                self.scaler.unscale_(self.optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
            else:
                grad_norm = float("nan")
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        if self.ema:
            self.ema.update(self.model)
        return grad_norm

    @torch.no_grad()
    def predict(self, dataset: CropDataset, model: nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores on this rank's share of `dataset` gathered from every rank, in dataset order."""
        model = model or self.model
        model.eval()
        model = with_tta(model, self.config.model.tta)
        indices = list(range(self.dist.rank, len(dataset), self.dist.world))
        loader = DataLoader(
            torch.utils.data.Subset(dataset, indices),
            batch_size=self.config.train.eval_batch_size or self.config.train.batch_size,
            num_workers=self.config.train.num_workers,
            shuffle=False,
        )
        scores = []
        with opencv_single_threaded():
            batches = iter(loader)
        for images, _ in batches:
            images = images.to(self.device, memory_format=self.memory_format)
            with self._autocast():
                scores.append(self.objective.probabilities(model(images)).cpu())
        width = () if self.objective.num_outputs == 1 else (self.objective.num_outputs,)
        mine = torch.cat(scores).numpy() if scores else np.zeros((0, *width))
        gathered = distributed.gather_objects(self.dist, (indices, mine))
        out = np.zeros((len(dataset), *width))
        for idx, values in gathered:
            out[idx] = values
        return out, dataset.labels

    def _validate(self) -> dict:
        model = self.ema.module if self.ema else self.model
        scores, labels = self.predict(self.val_set, model)
        return self.objective.validate(labels, scores)

    def _list_failures(self) -> None:
        """Inputs the kind left out (unreadable files): named in failures.csv and in a warning."""
        failures = self.data.failures
        if not failures:
            return
        path = atomic_write(
            self.output_dir / "failures.csv", lambda h: pd.DataFrame(failures).to_csv(h, index=False)
        )
        shown = "; ".join(f"{f['path']}: {f['reason']}" for f in failures[:3])
        self.events.warning(f"{len(failures)} input(s) left out (listed in {path}): {shown}", "train")

    # ----------------------------------------------------------------------------------------
    def fit(self) -> TrainSummary:
        started = time.perf_counter()
        train = self.config.train
        metric = train.early_stopping.metric
        self._say(
            f"training {self.info['name']} on {self.device} ({self.dist.world} process(es)): "
            f"{len(self.train_set)} train rows, {len(self.val_set)} val rows, {self.steps_per_epoch} "
            f"steps/epoch"
        )
        try:
            while self.epoch < train.epochs and self.stop_reason == "completed":
                row = self._train_epoch()
                row.update(self._validate())
                current = row[f"val_{metric}"] if f"val_{metric}" in row else row["val_loss"]
                improved = is_better(metric, current, self.best_metric)
                row.update(
                    epoch=self.epoch + 1,
                    global_step=self.global_step,
                    is_best=improved,
                    **hardware_use(self.device),
                )
                self.history.append(row)
                self.schedule.epoch_end(current, metric not in {"loss", "eer"})
                self.epoch += 1
                self.step_in_epoch = 0
                if improved:
                    self.best_metric, self.best_epoch, self.bad_epochs = current, self.epoch, 0
                    self.threshold = row["threshold"]
                else:
                    self.bad_epochs += 1
                state = self._checkpoint()
                if improved:
                    self._save_model(state)
                self.save("last.pt", state)
                self.reporter.epoch(row, self.history)
                self._backup()
                patience = train.early_stopping.patience
                if patience and self.bad_epochs >= patience and self.stop_reason == "completed":
                    self.stop_reason = "early_stopping"
                    self._say(f"early stopping: no {metric} improvement for {patience} epochs")
        except _Interrupted:
            self.stop_reason = "interrupted"
            self.save("last.pt")
            self._backup()
            self._say(f"interrupted: saved {self.output_dir / 'last.pt'} (resume with --resume)")
        finally:
            if self.history:
                self.events.result(
                    "train",
                    {
                        "history": self.history,
                        "stopped": self.stop_reason,
                        "best_epoch": self.best_epoch,
                        "best_metric": self.best_metric,
                    },
                )
        if (
            self.stop_reason == "max_steps"
            and self.history
            and self.history[-1]["global_step"] != self.global_step
        ):
            self.save("last.pt")
        artifact = self.output_dir / ARTIFACT_DIR
        return TrainSummary(
            self.kind,
            self.output_dir,
            artifact if (artifact / "model.json").is_file() else None,
            self.stop_reason,
            metric,
            self.best_metric,
            self.best_epoch,
            self.epoch,
            self.global_step,
            time.perf_counter() - started,
            self.history,
            {"threshold": self.threshold, "resume_state": self.output_dir / "last.pt"},
        )

    def _save_model(self, state: dict) -> None:
        """The artifact of the epoch just selected: the weights that were validated (EMA's when kept)."""
        if self.dist.is_main and self.save_model is not None:
            module = self.ema.module if self.ema else self.model
            self.save_model(self.output_dir / ARTIFACT_DIR, module.state_dict(), state)

    def stop(self) -> None:
        """Ask the run to save and stop after the current step (safe from any thread)."""
        self.run.stop.set()


def train(
    config: Config,
    data: TrainData,
    kind,
    resume: bool | str | Path = False,
    events=None,
    save_model=None,
    overwrite: bool = False,
) -> TrainSummary:
    """Train `kind` (a classification-family kind) as `config` says; `resume=True` continues from
    `<output_dir>/last.pt` (or the backup copy), a path resumes from that checkpoint. `save_model(folder,
    weights, state)` writes the artifact of each newly selected epoch. The run block (`engine.run`)
    holds the folder's lock, guards a finished run, seeds, stops on signals and resolves the device."""
    with Run(kind, config, RUN_FILES, "a training run", resume, overwrite, events) as run:
        trainer = Trainer(run, data, save_model=save_model)
        try:
            with flush_denormal():
                trainer.setup()
                return trainer.fit()
        finally:
            if hasattr(trainer, "dist"):
                # the DDP / DeepSpeed wrapper and its loaders go before the group: a DDP reducer freed
                # after its group is gone can wait forever for the other rank (the run then never exits)
                for name in ("net", "engine", "train_loader", "val_loader"):
                    if hasattr(trainer, name):
                        setattr(trainer, name, None)
                gc.collect()
                distributed.teardown(trainer.dist)
