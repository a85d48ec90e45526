"""`deepfake_detector`: binary real/fake detectors on face crops — a timm backbone (optionally with
a frequency branch and a manipulation-mask head) and one logit, with the decision threshold fitted
on validation. Trained by the classification family's loop on a prepared manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fakefinder.config import Config
from fakefinder.tasks.classification.kind import ClassificationKind


class DeepfakeDetector(ClassificationKind):
    name: ClassVar[str] = "deepfake_detector"
    dataset_layout: ClassVar[str] = "a prepared manifest.csv of face crops"
    description: ClassVar[str] = "binary real/fake detector on face crops"
    reads: ClassVar[tuple[str, ...]] = (
        "data",
        "faces",
        "prepare",
        "model",
        "augment",
        "train",
        "evaluate",
        "predict",
    )
    short_form: ClassVar[dict[str, str]] = {
        "base_model": "model.name",
        "dataset_path": "train.manifest",
        "epochs": "train.epochs",
        "batch_size": "train.batch_size",
        "learning_rate": "train.lr",
    }

    def train(self, config: Config, resume=False, events=None, overwrite: bool = False):
        from fakefinder.tasks.deepfake_detector.train import train

        return train(config, resume, events, overwrite)

    def evaluate(self, config: Config, models: list[Path], events=None):
        from fakefinder.tasks.deepfake_detector.evaluate import evaluate

        return evaluate(config, models, events=events)

    def load(self, artifacts: list, device: Any = "cpu", config: Config | None = None):
        from fakefinder.tasks.deepfake_detector.predict import DetectorEnsemble

        return DetectorEnsemble(artifacts, device, config or Config())

    def dataset_settings(self, path: Path) -> dict:
        from fakefinder.tasks.deepfake_detector.data import dataset_settings

        return dataset_settings(Path(path))

    def describe_dataset(self, path: Path) -> dict | None:
        from fakefinder.tasks.deepfake_detector.data import describe

        return describe(Path(path))

    def before_train(self, config: Config, events) -> None:
        from fakefinder.tasks.deepfake_detector.train import prepare_first

        prepare_first(config, events)

    def job_outputs(self, tree: dict, folder: Path) -> None:
        """Raw datasets are prepared inside the job; a backup copy of the run is kept with it."""
        train = tree.get("train") or {}
        if not train.get("manifest") and (tree.get("data") or {}).get("datasets"):
            tree["prepare"]["output_dir"] = str(folder / "prepared")
        if train.get("backup_dir"):
            train["backup_dir"] = str(folder / Path(train["backup_dir"]).name)

    def render_evaluation(self, metrics: dict, console) -> None:
        from fakefinder.tasks.deepfake_detector.report import print_tables

        print_tables(metrics, console)

    def demo_datasets(self) -> dict:
        from fakefinder import synthetic

        return {"faces": lambda folder: synthetic.make_prepared_crops(folder, groups=10, size=48)}

    def read_legacy(self, path: Path):
        if Path(path).is_file() and Path(path).suffix in {".pt", ".pth", ".ckpt"}:
            from fakefinder.tasks.deepfake_detector.artifact import artifact_from_checkpoint

            return artifact_from_checkpoint(path)
        return None


TASK = DeepfakeDetector()
