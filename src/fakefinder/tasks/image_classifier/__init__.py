"""`image_classifier`: N-class image classification from class folders (`dataset/{train,val[,test]}/
<class>/*.jpg`) with any timm backbone (ResNet-50 and hub weights by default), trained by the same
loop as the deepfake detectors: augmentations, AMP, EMA, exact resume, early stopping, DDP, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fakefinder.config import Config
from fakefinder.tasks.classification.kind import ClassificationKind
from fakefinder.tasks.image_classifier.config import ClassifierConfig


class ImageClassifier(ClassificationKind):
    name: ClassVar[str] = "image_classifier"
    dataset_layout: ClassVar[str] = "train/<class>/ image folders"
    description: ClassVar[str] = "N-class image classifier (timm backbone)"
    section: ClassVar[str] = "classifier"
    section_model = ClassifierConfig
    defaults: ClassVar[dict] = {
        "model": {"name": "resnet50", "pretrained": True, "image_size": 224},
        "train": {"lr": 1e-4, "epochs": 15, "batch_size": 16, "output_dir": "output/classifier"},
    }
    short_form: ClassVar[dict[str, str]] = {
        "base_model": "model.name",
        "dataset_path": "classifier.data_dir",
        "epochs": "train.epochs",
        "batch_size": "train.batch_size",
        "learning_rate": "train.lr",
    }
    option_sections: ClassVar[tuple[str, ...]] = ("classifier", "train", "model", "augment")

    def train(self, config: Config, resume=False, events=None, overwrite: bool = False):
        from fakefinder.tasks.image_classifier.train import train

        return train(config, resume, events, overwrite)

    def evaluate(self, config: Config, models: list[Path], events=None):
        from fakefinder.tasks.image_classifier.evaluate import evaluate

        return evaluate(config, models, events)

    def load(self, artifacts: list, device: Any = "cpu", config: Config | None = None):
        from fakefinder.tasks.image_classifier.predict import ClassifierPredictor

        artifact = self.one_artifact(artifacts)
        return ClassifierPredictor(artifact, device, config or Config(task=artifact.kind))

    def dataset_settings(self, path: Path) -> dict:
        from fakefinder.tasks.image_classifier.data import dataset_settings

        return dataset_settings(Path(path))

    def describe_dataset(self, path: Path) -> dict | None:
        from fakefinder.tasks.image_classifier.data import describe

        return describe(Path(path))

    def render_evaluation(self, metrics: dict, console) -> None:
        from fakefinder.tasks.image_classifier.report import print_tables

        print_tables(metrics, console)

    def demo_datasets(self) -> dict:
        from fakefinder import synthetic

        return {
            "classes": lambda folder: synthetic.make_class_folders(
                folder, per_split=(("train", 8), ("val", 4), ("test", 4))
            )
        }


TASK = ImageClassifier()
