"""The trackers every kind shares (`trackers` in its run settings): TensorBoard and Weights & Biases,
fed from the run's metric events, so a kind's loop only reports metrics and never wires a tracker."""

from __future__ import annotations

import math
from pathlib import Path

from fakefinder.config import ConfigError
from fakefinder.core.events import Event

NOT_PLOTTED = {"step", "epoch", "epochs", "global_step"}


class Trackers:
    """A sink for metric events: each numeric value goes to every tracker the run names, under
    `<stage>/<name>` at the event's step (its epoch when it has no step)."""

    def __init__(self, folder: Path, settings, run_config: dict, kind: str, section: str) -> None:
        self.tensorboard = None
        self.wandb = None
        if "tensorboard" in settings.trackers:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(Path(folder) / "tensorboard"))
        if "wandb" in settings.trackers:
            try:
                import wandb
            except ImportError as exc:
                raise ConfigError(
                    f"{section}.trackers names wandb, but wandb is not installed: pip install wandb"
                ) from exc
            self.wandb = wandb.init(
                project=settings.tracker_project or "fakefinder",
                entity=settings.tracker_entity,
                name=Path(folder).name,
                dir=str(folder),
                config=run_config,
                tags=[kind],
                resume="allow",
            )

    def __call__(self, event: Event) -> None:
        if event.type != "metrics":
            return
        step = event.step if event.step is not None else event.data.get("step", event.data.get("epoch"))
        values = {
            f"{event.stage}/{k}": float(v)
            for k, v in event.data.items()
            if k not in NOT_PLOTTED
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(float(v))
        }
        if not values:
            return
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(values, step=int(step) if step is not None else None)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
