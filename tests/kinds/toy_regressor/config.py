"""The `toy` config section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from fakefinder.config import RunSection, Section


class ToyTrainConfig(RunSection):
    output_dir: Path = Path("output/toy")
    epochs: int = Field(default=3, ge=1)
    lr: float = Field(default=0.05, gt=0)
    trackers: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    step_seconds: float = Field(
        default=0.0, ge=0, description="A pause after each epoch (to stop a run mid-way)."
    )


class ToyConfig(Section):
    data: Path | None = None
    width: int = 4
    train: ToyTrainConfig = Field(default_factory=ToyTrainConfig)
