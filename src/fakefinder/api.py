"""The Python API: what the CLI (and the platform) call. Each function dispatches on the model kind
that the config names (`task:`) or the model artifacts record, through `fakefinder.tasks`, and
reports through `events` (a callable receiving `fakefinder.core.events.Event`s; None: the
`fakefinder` logger). None of them prints."""

from __future__ import annotations

from pathlib import Path

from fakefinder.config import Config
from fakefinder.core.results import EvalSummary, PredictResult, TrainSummary


def prepare(config: Config, **kwargs):
    """Datasets in their published layouts -> face crops + manifest (see `fakefinder.faces.prepare`)."""
    from fakefinder.faces.prepare import prepare as run

    return run(config, **kwargs)


def train(
    config: Config, resume: bool | str | Path = False, events=None, overwrite: bool = False
) -> TrainSummary:
    """Train the kind `config.task` names; its model artifact lands in the run's output folder. A
    folder that holds a run is refused unless `resume` (continue it) or `overwrite` (replace it)."""
    from fakefinder.tasks import task_for_config

    return task_for_config(config).train(config, resume=resume, events=events, overwrite=overwrite)


def evaluate(config: Config, events=None) -> EvalSummary:
    """Evaluate `evaluate.models` (default: the model this config trains), dispatched on their kind."""
    from fakefinder.tasks import model_paths, task_for_models
    from fakefinder.tasks.registry import config_for_kind

    models = model_paths(config.evaluate.models, config)
    task, _ = task_for_models(models)
    return task.evaluate(config_for_kind(config, task), models, events=events)


def predict(config: Config, events=None) -> PredictResult:
    """Predict `predict.inputs` with `predict.models` (default: the model `config` trains): what the
    models' kind reads (images and videos, prompts), answered by its predictor."""
    from fakefinder.core.devices import pick_device
    from fakefinder.tasks import model_paths, task_for_models
    from fakefinder.tasks.registry import config_for_kind

    kind, artifacts = task_for_models(model_paths(config.predict.models, config))
    config = config_for_kind(config, kind)
    return kind.load(artifacts, pick_device(config.predict.device), config).run(config, events)
