"""The registry of model kinds (the way timm registers models); `fakefinder.tasks` fills it.

A kind is a `Task`: its name, the config section it owns (if any), the defaults it changes, and
the module that holds its functions, imported on first use:

    train(config, resume=False, events=None, overwrite=False)  -> a result with the artifact's path
    load(artifacts, device, config)       -> a predictor for `fakefinder predict` (infer.predict.FilePredictor)
    evaluate(config, models, events=None) -> metrics, files and a report
    default_model(config)                 -> where training that config leaves its artifact
    dataset_settings(path)                -> the config keys that train on the dataset folder `path`
    merge(artifact, output)               -> (kinds with `adapter`) the adapter folded into a standalone model
    predict(config, events=None)          -> (optional) predict for kinds whose inputs are not images or
                                             videos (`predict_inputs` names the file types they read)
    export(artifact, output, merged=False) -> (optional) the model in its field's own format (an adapter folder)

A kind also names how the platform's short job form maps onto its config (`short_form`: a short key
such as `epochs` -> its dotted config key), the key of its output folder (`output_key`), and the
sections where an unqualified key of a request is looked up, in order (`option_sections`).

The CLI and the Python API dispatch on the kind a config names (`task:`) or an artifact records
(`model.json: kind`), never on which files a folder holds. Adding a kind is a package of its own
under `fakefinder/tasks/` plus one `register(...)` line in `fakefinder/tasks/__init__.py`.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakefinder.config import Config, ConfigError, Section, register_kind
from fakefinder.core.errors import FakefinderError


class UnknownTaskError(FakefinderError, ValueError):
    """A kind no package registered."""


@dataclass(frozen=True)
class Task:
    name: str
    module: str  # where train / load / evaluate live
    description: str
    section: str | None = None  # the config section the kind owns
    section_model: type[Section] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    short_form: dict[str, str] = field(default_factory=dict)  # short job key -> dotted config key
    output_key: str = "train.output_dir"
    option_sections: tuple[str, ...] = ("train", "model", "augment")
    adapter: str | None = None  # the folder (in the artifact) holding a LoRA adapter, for kinds that train one
    predict_inputs: tuple[str, ...] | None = None  # file types predict reads (None: images and videos)

    def functions(self):
        return importlib.import_module(self.module)

    def train(self, config: Config, **kwargs):
        return self.functions().train(config, **kwargs)

    def load(self, artifacts: list, device: str = "cpu", config: Config | None = None):
        return self.functions().load(artifacts, device=device, config=config)

    def evaluate(self, config: Config, models: list[Path], **kwargs):
        return self.functions().evaluate(config, models, **kwargs)

    def default_model(self, config: Config) -> Path:
        """Where a training run of this config leaves its model artifact."""
        return self.functions().default_model(config)

    def dataset_settings(self, path: Path) -> dict[str, Any]:
        """The dotted config keys (and values) that train this kind on the dataset at `path`."""
        return self.functions().dataset_settings(Path(path))

    def merge(self, artifact: Path, output: Path) -> Path:
        if self.adapter is None:
            raise ConfigError(f"{self.name} models have no adapter to merge")
        return self.functions().merge(Path(artifact), Path(output))


    def own_predict(self):
        """The kind's own predict function (kinds whose inputs are not images or videos), or None."""
        return getattr(self.functions(), "predict", None)

    def export(self, artifact: Path, output: Path, **kwargs):
        functions = self.functions()
        if not hasattr(functions, "export"):
            raise ConfigError(f"{self.name} models have no export of their own")
        return functions.export(Path(artifact), Path(output), **kwargs)


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a kind: its name becomes a valid `task:` and its section a valid config section."""
    if task.name in _TASKS:
        raise ValueError(f"model kind {task.name!r} is registered twice")
    _TASKS[task.name] = task
    register_kind(task.name, task.section, task.section_model, task.defaults)
    return task


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    if name not in _TASKS:
        close = difflib.get_close_matches(str(name), list(_TASKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownTaskError(f"unknown model kind {name!r}{hint}; known kinds: {', '.join(list_tasks())}")
    return _TASKS[name]


def task_for_config(config: Config) -> Task:
    return get_task(config.task)


def read_model(path: str | Path):
    """The model artifact at `path`: a folder with model.json, or a checkpoint file written before
    artifacts existed (converted in memory, read with the safe loader)."""
    from fakefinder.core.artifact import ArtifactError, is_artifact, read_artifact

    path = Path(path)
    if is_artifact(path):
        return read_artifact(path)
    if path.is_file() and path.suffix in {".pt", ".pth", ".ckpt"}:
        from fakefinder.tasks.deepfake_detector.artifact import artifact_from_checkpoint

        return artifact_from_checkpoint(path)
    if not path.exists():
        raise ArtifactError(f"model not found: {path}")
    raise ArtifactError(f"{path} is not a model artifact (a folder with model.json) or a fakefinder checkpoint file")


def task_for_models(paths: list[Path], config: Config | None = None) -> tuple[Task, list]:
    """The one kind several artifacts share (an ensemble is of one kind), and the artifacts; with no
    paths, the model that training `config` made."""
    if not paths:
        if config is None:
            raise ConfigError("no model given")
        paths = [task_for_config(config).default_model(config)]
    artifacts = [read_model(p) for p in paths]
    kinds = sorted({a.kind for a in artifacts})
    if len(kinds) > 1:
        raise ConfigError(f"models of different kinds cannot be used together: {kinds}")
    return get_task(kinds[0]), artifacts


def model_paths(paths: list[Path], config: Config) -> list[Path]:
    """`paths`, or the artifact training `config` made."""
    return [Path(p) for p in paths] or [task_for_config(config).default_model(config)]
