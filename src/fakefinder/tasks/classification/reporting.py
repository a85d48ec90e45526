"""What a training run of the classification family records beside its checkpoints: hardware use,
its metrics as events (the run's trackers, the CLI's epoch lines and the platform read those), a
metrics JSONL/CSV and loss/metric plots. Only rank 0 reports."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

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
    """Each logged step and each epoch's row as metric events (the run's trackers take them from there);
    the epoch rows also in history.jsonl / history.csv and, with `plots`, curves.png."""

    def __init__(self, output_dir: Path, config, enabled: bool, events, total_steps: int) -> None:
        self.output_dir = Path(output_dir)
        self.config = config
        self.enabled = enabled
        self.events = events
        self.total_steps = total_steps
        self.history: list[dict] = []
        if enabled:
            import psutil

            psutil.cpu_percent(interval=None)  # the first reading is a baseline; later ones mean "since then"

    def step(self, global_step: int, epoch: float, values: dict[str, float]) -> None:
        if self.enabled:
            self.events.metrics(
                "train",
                values,
                step=global_step,
                total=self.total_steps,
                epoch=round(epoch, 4),
                epochs=self.config.epochs,
            )

    def epoch(self, row: dict, history: list[dict]) -> None:
        self.history = history
        if not self.enabled:
            return
        self.write_history()
        if self.config.plots:
            self.plot()
        self.events.metrics(
            "val",
            {k: v for k, v in row.items() if k not in ("epoch", "global_step")},
            step=row["global_step"],
            total=self.total_steps,
            epoch=row["epoch"],
            epochs=self.config.epochs,
        )

    def write_history(self) -> None:
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write_text(self.output_dir / "history.jsonl", lines)
        keys = list(dict.fromkeys(k for r in self.history for k in r))
        csv = (
            ",".join(keys)
            + "\n"
            + "".join(",".join(str(r.get(k, "")) for k in keys) + "\n" for r in self.history)
        )
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
            axes[1].plot(
                epochs, [r.get(key, float("nan")) for r in self.history], "o-", label=key.removeprefix("val_")
            )
        axes[1].set(title="validation", xlabel="epoch", ylim=(0, 1))
        axes[1].legend()
        save_png(figure, self.output_dir / "curves.png", dpi=100)


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
