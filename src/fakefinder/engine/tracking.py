"""The trackers every kind shares (`trackers` in its run settings): TensorBoard, Weights & Biases and
MLflow, fed from the run's metric events, so a kind's loop only reports metrics and never wires a
tracker. `MlflowRun` is also what the platform logs its jobs with, from the same events."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from fakefinder.config import ConfigError
from fakefinder.core.events import Event

NOT_PLOTTED = {"step", "epoch", "epochs", "global_step"}


MLFLOW_NOTE = "mlflow_run.json"  # in a run folder: the MLflow run it logs to (a resume continues it)
PLATFORM_LOGS_MLFLOW = "FAKEFINDER_MLFLOW_BY_PLATFORM"  # set for a platform job: the server logs it


def metric_values(data: dict) -> dict[str, float]:
    """The plottable numbers of a metric event (finite, not a bool, not a step counter)."""
    return {
        str(k): float(v)
        for k, v in data.items()
        if k not in NOT_PLOTTED
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


def metric_step(data: dict, step: Any = None) -> int | None:
    """The step a metric event is logged at: its step, else its epoch."""
    value = step if step is not None else data.get("step", data.get("epoch"))
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def local_mlflow_uri(folder: Path) -> str:
    """MLflow's own local default, placed in `folder`: a SQLite store (`mlflow.db`)."""
    return f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def flat_params(tree: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: `train.lr` -> "0.001" (lists and null as JSON)."""
    if isinstance(tree, dict) and tree:
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flat_params(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = tree if isinstance(tree, str) else json.dumps(tree, default=str)
    return {prefix: text[:6000]}  # MLflow's limit on a param's value


class MlflowRun:
    """One MLflow run of a job: the resolved config as params, the kind (and who started it) as tags,
    every metric at its step as `<stage>/<name>`, and at its end the report and the artifact folder.
    `run_id` continues a run (a resumed job)."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        name: str,
        kind: str,
        config: dict,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Param
        except ImportError as exc:
            raise ConfigError(
                "trackers names mlflow, but MLflow is not installed: pip install 'fakefinder[mlflow]'"
            ) from exc
        self.client = MlflowClient(tracking_uri=uri)
        if run_id is not None:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = None
            if uri.startswith("sqlite:///"):  # a local store keeps its files beside the database
                location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts" / experiment).as_uri()
            experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        run = self.client.create_run(
            experiment_id, run_name=name, tags={"fakefinder.kind": kind, **(tags or {})}
        )
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in flat_params(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log(self, stage: str | None, data: dict, step: Any = None, timestamp: float | None = None) -> None:
        import time

        from mlflow.entities import Metric

        values = metric_values(data)
        if not values:
            return
        at = int((timestamp or time.time()) * 1000)
        step = metric_step(data, step) or 0
        prefix = f"{stage}/" if stage else ""
        metrics = [Metric(f"{prefix}{k}", v, at, step) for k, v in values.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def finish(self, status: str, report: Path | None = None, artifact: Path | None = None) -> None:
        """`status`: FINISHED, FAILED or KILLED; the report file and the artifact folder go with it."""
        if report is not None and Path(report).is_file():
            self.client.log_artifact(self.run_id, str(report))
        if artifact is not None and Path(artifact).is_dir():
            self.client.log_artifacts(self.run_id, str(artifact), artifact_path="model")
        self.client.set_terminated(self.run_id, status=status)


class Trackers:
    """A sink for metric events: each numeric value goes to every tracker the run names, under
    `<stage>/<name>` at the event's step (its epoch when it has no step)."""

    def __init__(
        self, folder: Path, settings, run_config: dict, kind: str, section: str, artifact_dir: str = "model"
    ) -> None:
        self.tensorboard = None
        self.wandb = None
        self.mlflow: MlflowRun | None = None
        self.folder, self.artifact_dir = Path(folder), artifact_dir
        if "mlflow" in settings.trackers and not os.environ.get(PLATFORM_LOGS_MLFLOW):
            note = self.folder / MLFLOW_NOTE
            earlier = json.loads(note.read_text()) if note.is_file() else {}
            uri = (
                settings.tracker_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_mlflow_uri(Path.cwd())
            )
            self.mlflow = MlflowRun(
                uri,
                settings.tracker_project or "fakefinder",
                self.folder.name,
                kind,
                run_config,
                run_id=earlier.get("run_id") if earlier.get("uri") == uri else None,
            )
            self.folder.mkdir(parents=True, exist_ok=True)
            note.write_text(json.dumps({"uri": uri, "run_id": self.mlflow.run_id}))
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
        if self.mlflow is not None:
            self.mlflow.log(event.stage, event.data, event.step)
        step = event.step if event.step is not None else event.data.get("step", event.data.get("epoch"))
        values = {f"{event.stage}/{k}": v for k, v in metric_values(event.data).items()}
        if not values:
            return
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(values, step=int(step) if step is not None else None)

    def close(self, status: str = "FINISHED") -> None:
        if self.mlflow is not None:
            reports = sorted(self.folder.glob("*.html"))
            artifact = self.folder / self.artifact_dir
            self.mlflow.finish(
                status, reports[0] if reports else None, artifact if artifact.is_dir() else None
            )
            self.mlflow = None
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
