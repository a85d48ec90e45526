"""The answers every model kind gives, one shape each: a training run's `TrainSummary`, an
evaluation's `EvalSummary`, a prediction's `PredictResult`, and the `Predictor` that `load` returns.
The CLI, the Python API and the platform read these and nothing kind-specific."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STOP_REASONS = ("completed", "early_stopping", "max_steps", "interrupted")


def plain(value: Any) -> Any:
    """A value as JSON holds it: paths as text, NaN as null, numpy numbers as numbers."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return plain(value.item())
        except (TypeError, ValueError):
            pass
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass
class TrainSummary:
    """How a training run ended: where its model artifact is (None when it stopped before writing
    one), why it stopped, the selection metric and its best value, how far it got."""

    kind: str
    output_dir: Path
    artifact: Path | None
    stopped: str = "completed"  # one of STOP_REASONS
    metric: str | None = None  # what selected the artifact (macro_f1, eval_loss, fitness, ...)
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs: float | None = None  # epochs run (fractions for step-based kinds)
    steps: int = 0  # optimizer steps run
    seconds: float | None = None
    history: list[dict] = field(default_factory=list)  # the metric rows of the run, in order
    details: dict[str, Any] = field(
        default_factory=dict
    )  # what only this kind reports (threshold, data checks)

    @property
    def interrupted(self) -> bool:
        return self.stopped == "interrupted"

    def to_dict(self, history: bool = False) -> dict:
        out = {
            "kind": self.kind,
            "output_dir": self.output_dir,
            "artifact": self.artifact,
            "stopped": self.stopped,
            "metric": self.metric,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "steps": self.steps,
            "seconds": self.seconds,
            "details": self.details,
        }
        if history:
            out["history"] = self.history
        return plain(out)


@dataclass
class EvalSummary:
    """An evaluation's figures (`metrics`, as written to `metrics_file`), its report page, and any
    further files it wrote (predictions, answers, samples)."""

    kind: str
    output_dir: Path
    metrics: dict
    metrics_file: Path
    report_file: Path | None
    files: dict[str, Path] = field(default_factory=dict)
    tables: dict = field(default_factory=dict)  # summary tables for terminals (kinds that have them)

    def to_dict(self) -> dict:
        return plain(
            {
                "kind": self.kind,
                "output_dir": self.output_dir,
                "metrics": self.metrics,
                "metrics_file": self.metrics_file,
                "report_file": self.report_file,
                "files": self.files,
            }
        )


@dataclass
class PredictResult:
    """A prediction run: the output table written to `submission_path` (one row per input), an
    optional details file, and its timing."""

    submission_path: Path
    details_path: Path | None
    table: Any  # a pandas DataFrame
    seconds: float
    files_per_second: float
    timing: dict = field(default_factory=dict)


class Predictor:
    """A loaded model that answers `fakefinder predict`: `run(config, events)` reads
    `config.predict.inputs`, writes `config.predict.output` (and details) and returns a
    `PredictResult`. `inputs` names the file types it reads (None: images and videos)."""

    inputs: tuple[str, ...] | None = None
    kind: str = ""  # the kind of the model it loaded

    def run(self, config, events=None) -> PredictResult:
        raise NotImplementedError
