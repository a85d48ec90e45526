"""`object_detector`: YOLO object detection on the YOLO dataset layout (images/{train,val},
labels/{train,val}/*.txt, data.yaml) with Ultralytics (AGPL-3.0, an optional extra): YOLOv8n at
640 px by default, built from its model YAML; labels checked first; safe checkpoints and artifacts.
An object detector trained on faces serves `prepare` as the face detector `yolo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fakefinder.config import Config, ConfigError
from fakefinder.tasks.base import Exported, Kind
from fakefinder.tasks.object_detector.config import IMAGE_EXTENSIONS, ObjectDetectorConfig


class ObjectDetector(Kind):
    name: ClassVar[str] = "object_detector"
    dataset_layout: ClassVar[str] = "a YOLO data.yaml"
    description: ClassVar[str] = "YOLO object detector (Ultralytics)"
    section: ClassVar[str] = "object_detector"
    section_model = ObjectDetectorConfig
    short_form: ClassVar[dict[str, str]] = {
        "base_model": "object_detector.model.arch",
        "dataset_path": "object_detector.data.path",
        "epochs": "object_detector.train.epochs",
        "batch_size": "object_detector.train.batch_size",
        "learning_rate": "object_detector.train.lr",
        "image_size": "object_detector.train.imgsz",
    }
    option_sections: ClassVar[tuple[str, ...]] = (
        "object_detector.train",
        "object_detector.data",
        "object_detector.model",
        "object_detector.eval",
        "object_detector.predict",
        "object_detector",
    )
    run_section: ClassVar[str] = "object_detector.train"
    worker_imports: ClassVar[tuple[str, ...]] = ("torch", "torchvision", "pandas")
    predict_inputs: ClassVar[tuple[str, ...]] = IMAGE_EXTENSIONS  # the CLI also reads .txt lists of images

    def train(self, config: Config, resume=False, events=None, overwrite: bool = False):
        from fakefinder.tasks.object_detector.train import train

        return train(config, resume, events, overwrite)

    def evaluate(self, config: Config, models: list[Path], events=None):
        from fakefinder.tasks.object_detector.evaluate import evaluate

        return evaluate(config, models, events)

    def load(self, artifacts: list, device: Any = "cpu", config: Config | None = None):
        from fakefinder.tasks.object_detector.predict import BoxPredictor

        return BoxPredictor(self.one_artifact(artifacts), str(device))

    def dataset_settings(self, path: Path) -> dict:
        from fakefinder.tasks.object_detector.data import dataset_settings

        return dataset_settings(Path(path))

    def describe_dataset(self, path: Path) -> dict | None:
        from fakefinder.tasks.object_detector.data import describe

        return describe(Path(path))

    def export(self, artifact: Path, output: Path, merged: bool = False, tolerance: float = 1e-4) -> Exported:
        from fakefinder.tasks.object_detector.export import export

        if merged:
            raise ConfigError("--merged: an object detector has no adapter to merge")
        return Exported(export(Path(artifact), Path(output)), "ONNX, checked against PyTorch")

    def platform_settings(self) -> dict[str, Any]:
        # a dataset's data.yaml may name images only inside its folder
        return {"object_detector.data.confine": True}

    def demo_datasets(self) -> dict:
        from fakefinder import synthetic

        return {
            "shapes": lambda folder: synthetic.make_yolo_dataset(
                folder, {"train": 24, "val": 8}, size=64, background_every=8
            )
        }

    def face_detectors(self) -> dict:
        def yolo(**settings):
            from fakefinder.tasks.object_detector.faces import YoloFaceDetector

            return YoloFaceDetector(**settings)

        return {"yolo": yolo}


TASK = ObjectDetector()
