"""The contract of a model kind. A kind is a package under `fakefinder/tasks/` (or any installed
package) holding a `Kind` subclass, registered with one `register(...)` line; the CLI, the Python API
and the platform reach it only through these methods and attributes.

Every kind implements `train` (-> `TrainSummary`), `evaluate` (-> `EvalSummary`), `load` (-> a
`Predictor`, whose `run` is `fakefinder predict`), `dataset_settings` and `describe_dataset`; the
rest has defaults it may override.
Heavy imports (torch, transformers, Ultralytics, diffusers) happen inside the methods, never when
the package is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from fakefinder.config import Config, ConfigError, Section
from fakefinder.core.results import EvalSummary, Predictor, PredictResult, TrainSummary

if TYPE_CHECKING:
    from fakefinder.core.artifact import Artifact

__all__ = ["EvalSummary", "Exported", "Kind", "PredictResult", "Predictor", "TrainSummary"]


class Exported:
    """What `export` wrote: the path, and a line that says what it is (a parity figure, 'adapter')."""

    def __init__(self, path: Path, note: str = "") -> None:
        self.path, self.note = Path(path), note

    def __repr__(self) -> str:
        return f"Exported({self.path}, {self.note!r})"


class Kind:
    """A model kind. Class attributes describe it; methods do its work.

    name, description   what `task:` names and /api/kinds shows
    section, section_model
                        the config section it owns (e.g. `llm`) and its pydantic model, if any
    reads               the shared config sections its configs hold besides its own (saved configs and
                        artifacts hold these and nothing else)
    defaults            shared-section defaults it changes (a nested mapping)
    short_form          the platform's short request keys -> dotted config keys (`epochs` -> ...)
    option_sections     where an unqualified request key is looked up, in order
    run_section         the dotted section holding its run settings: output_dir, device, seed, ...
    artifact_dir        the artifact's folder inside the run folder
    adapter             the folder inside the artifact holding a LoRA adapter (kinds that train one)
    predict_inputs      file types `predict` reads (None: images and videos)
    multi_process       whether torchrun may run it on several processes (DDP, DeepSpeed)
    dataset_layout      what a dataset it trains on looks like, in a few words (messages list it)
    draws_heatmaps      whether its models draw where they looked (`predict.heatmaps`); the platform's
                        predict form offers heatmaps where this is true
    worker_imports      the libraries its jobs import (torch, timm, peft, ...): the platform's warm
                        process imports them at the kind's first job, and forks each of its workers
                        with them imported (platform/executors/warm.py)
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    section: ClassVar[str | None] = None
    section_model: ClassVar[type[Section] | None] = None
    reads: ClassVar[tuple[str, ...]] = ("evaluate", "predict")
    defaults: ClassVar[dict[str, Any]] = {}
    short_form: ClassVar[dict[str, str]] = {}
    option_sections: ClassVar[tuple[str, ...]] = ()
    run_section: ClassVar[str] = "train"
    artifact_dir: ClassVar[str] = "model"
    adapter: ClassVar[str | None] = None
    predict_inputs: ClassVar[tuple[str, ...] | None] = None
    multi_process: ClassVar[bool] = False
    dataset_layout: ClassVar[str] = ""
    draws_heatmaps: ClassVar[bool] = False
    worker_imports: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ what every kind implements
    def train(
        self, config: Config, resume: bool | str | Path = False, events=None, overwrite: bool = False
    ) -> TrainSummary:
        """Train as `config` says; the artifact lands in `default_model(config)`. A folder that holds
        a run is refused unless `resume` (continue it) or `overwrite` (replace it)."""
        raise NotImplementedError

    def evaluate(self, config: Config, models: list[Path], events=None) -> EvalSummary:
        """Each of `models` (artifacts of this kind) on the evaluation data `config` names: a
        metrics file and a report page in `config.evaluate.output_dir`."""
        raise NotImplementedError

    def load(self, artifacts: list[Artifact], device: Any = "cpu", config: Config | None = None) -> Predictor:
        """The artifacts (one, or an ensemble where the kind has one) ready to predict."""
        raise NotImplementedError

    def one_artifact(self, artifacts: list[Artifact]) -> Artifact:
        """The artifact of a kind that predicts with one model only; an ensemble is refused."""
        if len(artifacts) != 1:
            raise ConfigError(f"predict: a {self.name} model runs alone (no ensemble of {len(artifacts)})")
        return artifacts[0]

    def dataset_settings(self, path: Path) -> dict[str, Any]:
        """The dotted config keys (and values) that train this kind on the dataset at `path`."""
        raise NotImplementedError

    def describe_dataset(self, path: Path) -> dict | None:
        """What the dataset folder `path` holds for this kind: None when it is not in this kind's
        layout, else {"layout", "splits" ({split: {class or count name: n}}), "note", "usable"}
        (usable: training can read it as it is). The platform's upload check and dataset picker
        show it."""
        return None

    # ------------------------------------------------------------------ defaults a kind may override
    def run_settings(self, config: Config) -> Section:
        """The section holding this kind's run settings (`run_section`)."""
        node: Any = config
        for part in self.run_section.split("."):
            node = getattr(node, part)
        return node

    def default_model(self, config: Config) -> Path:
        """Where a training run of `config` leaves its artifact."""
        return Path(self.run_settings(config).output_dir) / self.artifact_dir

    def export(self, artifact: Path, output: Path, merged: bool = False, tolerance: float = 1e-4) -> Exported:
        """The model in its field's own format (ONNX, an adapter folder, ...)."""
        raise ConfigError(f"{self.name} models have no export")

    def merge(self, artifact: Path, output: Path) -> Path:
        """A LoRA adapter folded into its base: a standalone artifact of the same kind."""
        raise ConfigError(f"{self.name} models have no adapter to merge")

    def processes(self, config: Config) -> int:
        """How many processes a run of `config` takes (one per GPU under DDP / DeepSpeed)."""
        return int(getattr(self.run_settings(config), "num_processes", 1) or 1)

    def devices(self, config: Config, resources: dict) -> int:
        """How many GPUs a job of `config` asks the executor for: one per process where its device is
        `auto` or names a GPU (cuda, cuda:1, an index) and the executor reports GPUs
        (`resources["gpus"]`); none on a CPU-only cluster (where a job that names a GPU then fails at
        once, naming its device key, instead of waiting for a GPU that is not there) or for `cpu`."""
        device = str(getattr(self.run_settings(config), "device", "auto")).strip().lower()
        names_gpu = (
            device in ("auto", "cuda") or device.startswith("cuda:") or device.replace(",", "").isdigit()
        )
        return self.processes(config) if names_gpu and int(resources.get("gpus") or 0) > 0 else 0

    def before_train(self, config: Config, events) -> None:
        """What must exist before training starts (e.g. face crops prepared from raw datasets)."""

    def job_outputs(self, tree: dict, folder: Path) -> None:
        """Platform jobs: move further outputs of a config tree into the job's folder (the run,
        its evaluation and predictions are placed already)."""

    def platform_settings(self) -> dict[str, Any]:
        """Dotted keys the platform sets on every job of this kind (e.g. data confined to its folder)."""
        return {}

    def render_evaluation(self, metrics: dict, console) -> None:
        """An evaluation's figures in a terminal; the default: one row of numbers per model."""
        from fakefinder.engine.report import scalar_table

        scalar_table(metrics, console)

    def demo_datasets(self) -> dict[str, Callable[[Path], Any]]:
        """Tiny datasets to try the kind on (`fakefinder serve --demo-data`): name -> writer(folder)."""
        return {}

    def face_detectors(self) -> dict[str, Callable[..., Any]]:
        """Face detectors this kind's models can serve `prepare` as: name -> factory(**settings)."""
        return {}

    def commands(self):
        """A typer app of commands only this kind has (`fakefinder <its name with dashes> ...`), or None."""
        return None

    def read_legacy(self, path: Path) -> Artifact | None:
        """A model file written before artifacts existed, read safely as an artifact in memory; None
        when `path` is not one of this kind's."""
        return None

    def heatmap_check(self, artifact: Path) -> dict | None:
        """What the artifact at `artifact` records of its heatmaps' check on validation (`method`,
        `beats_prior`: whether they beat a face prior there); None when they were never checked."""
        return None

    def describe(self) -> str:
        return f"{self.name}: {self.description}"

    def __repr__(self) -> str:
        return f"<kind {self.name}>"
