"""What a training run records beside its checkpoints: hardware use, TensorBoard, W&B, a metrics
JSONL/CSV and loss/metric plots; each epoch's row also goes out as a `metrics` event (the CLI
prints it as one line). Only rank 0 reports."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from fakefinder.config import LoggingConfig
from fakefinder.core.files import atomic_write_text


def hardware_use(device: torch.device) -> dict[str, float]:
    import psutil

    process = psutil.Process(os.getpid())
    usage = {
        "cpu_pct": psutil.cpu_percent(interval=None),
        "ram_gb": round(process.memory_info().rss / 2**30, 2),
    }
    if device.type == "cuda":
        usage["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return usage


class RunReporter:
    def __init__(self, output_dir: Path, config: LoggingConfig, enabled: bool, run_config: dict, events) -> None:
        self.output_dir = Path(output_dir)
        self.config = config
        self.enabled = enabled
        self.events = events
        self.history: list[dict] = []
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        import psutil

        psutil.cpu_percent(interval=None)  # the first reading is a baseline; later ones mean "since then"
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))
        if config.wandb_project:
            try:
                import wandb
            except ImportError as exc:
                raise RuntimeError("train.logging.wandb_project is set but wandb is not installed: pip install wandb") from exc
            self.wandb = wandb.init(project=config.wandb_project, entity=config.wandb_entity, config=run_config,
                                    dir=str(self.output_dir), resume="allow")

    # -- per step ---------------------------------------------------------------------------
    def step(self, global_step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.tb:
            for key, value in values.items():
                self.tb.add_scalar(f"train/{key}", value, global_step)
        if self.wandb:
            self.wandb.log({f"train/{k}": v for k, v in values.items()}, step=global_step)

    # -- per epoch --------------------------------------------------------------------------
    def epoch(self, row: dict, history: list[dict]) -> None:
        self.history = history
        if not self.enabled:
            return
        step = row["global_step"]
        if self.tb:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "global_step"):
                    self.tb.add_scalar(f"epoch/{key}", value, step)
            self.tb.flush()
        if self.wandb:
            self.wandb.log({f"epoch/{k}": v for k, v in row.items() if isinstance(v, (int, float))}, step=step)
        self.write_history()
        if self.config.plots:
            self.plot()
        self.events.metrics("epoch", row)

    def write_history(self) -> None:
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write_text(self.output_dir / "history.jsonl", lines)
        keys = list(dict.fromkeys(k for r in self.history for k in r))
        csv = ",".join(keys) + "\n" + "".join(",".join(str(r.get(k, "")) for k in keys) + "\n" for r in self.history)
        atomic_write_text(self.output_dir / "history.csv", csv)

    def plot(self) -> None:
        from fakefinder.core.plots import new_figure, save_png

        epochs = [r["epoch"] for r in self.history]
        figure, axes = new_figure(1, 2, figsize=(11, 4))
        axes[0].plot(epochs, [r["train_loss"] for r in self.history], "o-", label="train")
        axes[0].plot(epochs, [r["val_loss"] for r in self.history], "o-", label="val")
        axes[0].set(title="loss", xlabel="epoch")
        axes[0].legend()
        for key in ("val_auc", "val_macro_f1", "val_accuracy"):
            axes[1].plot(epochs, [r.get(key, float("nan")) for r in self.history], "o-", label=key.removeprefix("val_"))
        axes[1].set(title="validation", xlabel="epoch", ylim=(0, 1))
        axes[1].legend()
        save_png(figure, self.output_dir / "curves.png", dpi=100)

    def close(self) -> None:
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
