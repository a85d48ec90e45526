"""Optimizers with no-decay parameter groups, and learning-rate schedules with warmup.

The schedule is a small resumable object: the lr of every step is a pure function of the step
(plus, for `plateau`, a factor that validation lowers).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fakefinder.config import TrainConfig


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Biases and norm weights get no weight decay; the new head may get a larger lr."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias")
        is_head = name.startswith(("head.", "frequency.", "module.head.", "module.frequency."))
        groups.setdefault((no_decay, is_head), []).append(param)
    out = []
    for (no_decay, is_head), params in sorted(groups.items()):
        lr = config.lr * (config.head_lr_scale if is_head else 1.0)
        out.append(
            {
                "params": params,
                "weight_decay": 0.0 if no_decay else config.weight_decay,
                "lr": lr,
                "base_lr": lr,
                "name": f"{'head' if is_head else 'body'}{'/no_decay' if no_decay else ''}",
            }
        )
    return out


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


class Schedule:
    """Linear warmup, then cosine / step / constant decay per optimizer step; `plateau` divides
    the lr by 1/gamma after `patience` epochs without improvement."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int, plateau_patience: int = 2) -> None:
        self.kind = config.scheduler
        self.total = max(1, config.epochs * steps_per_epoch)
        if config.max_steps:
            self.total = min(self.total, config.max_steps)
        self.warmup = int(round(config.warmup_epochs * steps_per_epoch))
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.step_epochs = config.step_epochs
        self.gamma = config.gamma
        self.min_ratio = config.min_lr / config.lr
        self.plateau_patience = plateau_patience
        self.plateau_factor = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad = 0

    def factor(self, step: int) -> float:
        """lr multiplier for optimizer step `step` (0-based)."""
        if self.warmup and step < self.warmup:
            return max(0.01, (step + 1) / self.warmup)
        if self.kind == "cosine":
            progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.gamma ** ((step // self.steps_per_epoch) // self.step_epochs)
        if self.kind == "plateau":
            return max(self.min_ratio, self.plateau_factor)
        return 1.0

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        f = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * f
        return optimizer.param_groups[0]["lr"]

    def epoch_end(self, value: float | None, higher_is_better: bool) -> None:
        if self.kind != "plateau" or value is None or math.isnan(value):
            return
        better = self.plateau_best is None or (
            value > self.plateau_best if higher_is_better else value < self.plateau_best
        )
        if better:
            self.plateau_best, self.plateau_bad = value, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad >= self.plateau_patience:
                self.plateau_factor *= self.gamma
                self.plateau_bad = 0

    def state_dict(self) -> dict:
        return {
            "plateau_factor": self.plateau_factor,
            "plateau_best": self.plateau_best,
            "plateau_bad": self.plateau_bad,
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_factor = state["plateau_factor"]
        self.plateau_best = state["plateau_best"]
        self.plateau_bad = state["plateau_bad"]


class ModelEma:
    """Exponential moving average of the weights (buffers copied), used for validation."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_state = self.module.state_dict()
        for key, value in model.state_dict().items():
            target = ema_state[key]
            if value.dtype.is_floating_point:
                target.mul_(decay).add_(value.detach(), alpha=1 - decay)
            else:
                target.copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
