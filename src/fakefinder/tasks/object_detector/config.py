"""The `detector` config section: the YOLO dataset, the model, training, evaluation and prediction of
the `object_detector` kind (Ultralytics YOLO)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fakefinder.config import RunSection, Section

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # what the YOLO layout holds


class ObjectDetectorDataConfig(Section):
    path: Path | None = Field(
        default=None,
        description="The YOLO dataset: its data.yaml (train, val[, test], nc, names), or the folder "
        "that holds it (images/{train,val}, labels/{train,val}/*.txt: `class cx cy w h`, normalised).",
    )
    bad_labels: Literal["error", "skip"] = Field(
        default="error",
        description="A malformed line, an unknown class id or a coordinate outside [0, 1]: stop "
        "with each one's file and line (error), or leave out the images they belong to (skip; listed in "
        "label_report.json).",
    )
    confine: bool = Field(
        default=False,
        description="Every image must lie inside the dataset's folder (set by the "
        "platform for its datasets).",
    )
    check_images: bool = Field(
        default=True, description="Open every image's header first; an unreadable one is listed and left out."
    )


class ObjectDetectorModelConfig(Section):
    arch: str = Field(
        default="yolov8n.yaml",
        description="An Ultralytics model YAML: a name it ships (yolov8n.yaml ... "
        "yolov8x.yaml, yolo11n.yaml, ...) or a local YAML file; the model is built from it. "
        "'random:tiny': YOLOv8's layout at half the n width (tests, demos).",
    )
    weights: str | None = Field(
        default=None,
        description="Start from these weights (matching layers): an object_detector artifact, a "
        ".safetensors file, an Ultralytics .pt (read weights-only: module classes and tensors, no code), or "
        "an official name such as yolov8n.pt (downloaded by Ultralytics when online). None: random init.",
    )


class ObjectDetectorTrainConfig(RunSection):
    output_dir: Path = Path("output/detector")
    epochs: int = Field(default=100, ge=1)
    max_steps: None = Field(default=None, description="Ultralytics trains whole epochs (not a setting here).")
    imgsz: int = Field(
        default=640, ge=32, description="Training and validation image size (a multiple of 32)."
    )
    batch_size: int = Field(default=16, ge=1)
    nbs: int = Field(
        default=64,
        ge=1,
        description="Nominal batch size: gradients are accumulated to about this "
        "many images per step, weight decay scaled to it.",
    )
    optimizer: Literal["auto", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp"] = Field(
        default="auto", description="auto: Ultralytics picks one (and its lr) from the run length."
    )
    lr: float = Field(
        default=0.01,
        gt=0,
        description="Initial learning rate (auto optimizer: chosen by Ultralytics from the run length).",
    )
    lrf: float = Field(default=0.01, gt=0, le=1, description="Final learning rate as a fraction of lr.")
    momentum: float = Field(default=0.937, ge=0, lt=1, description="SGD momentum (Adam's beta1).")
    weight_decay: float = Field(default=0.0005, ge=0)
    warmup_epochs: float = Field(default=3.0, ge=0, description="Linear warm-up, in epochs.")
    cos_lr: bool = Field(default=False, description="Cosine learning-rate decay (default: linear to lrf).")
    patience: int = Field(
        default=100, ge=1, description="Stop after this many epochs without a better val fitness."
    )
    close_mosaic: int = Field(
        default=10, ge=0, description="Mosaic augmentation is off for the last N epochs."
    )
    num_workers: int = Field(default=8, ge=0, description="Data loader processes (the CPU loads in-process).")
    cache: Literal[False, "ram", "disk"] = Field(
        default=False, description="Cache decoded images in RAM or on disk."
    )
    deterministic: bool = Field(default=True, description="Deterministic algorithms (repeatable runs).")
    device: str = Field(
        default="auto",
        description="auto (the first GPU, else the CPU), cpu, cuda, cuda:1, or a GPU index (0, 1, ...).",
    )
    augment: dict[str, Any] = Field(
        default_factory=dict,
        description="Further Ultralytics training arguments by their names (hsv_h, degrees, "
        "scale, fliplr, mosaic, mixup, ...), checked against Ultralytics' own list.",
    )


class ObjectDetectorEvalConfig(Section):
    split: Literal["val", "test"] = Field(
        default="val",
        description="`fakefinder evaluate` reads this split of "
        "the dataset (test: read once per finished recipe).",
    )
    conf: float = Field(
        default=0.001, gt=0, lt=1, description="Score floor for mAP (low: the whole precision-recall curve)."
    )
    iou: float = Field(default=0.7, gt=0, lt=1, description="NMS IoU threshold.")
    samples: int = Field(
        default=8, ge=0, description="Images drawn in the report with predicted and true boxes."
    )


class ObjectDetectorPredictConfig(Section):
    conf: float = Field(default=0.25, gt=0, lt=1, description="Boxes scored below this are dropped.")
    iou: float = Field(default=0.7, gt=0, lt=1, description="NMS IoU threshold.")
    max_det: int = Field(default=300, ge=1, description="Most boxes kept per image.")
    draw: bool = Field(
        default=False, description="Also write each image with its boxes drawn (next to the output)."
    )


class ObjectDetectorConfig(Section):
    data: ObjectDetectorDataConfig = Field(default_factory=ObjectDetectorDataConfig)
    model: ObjectDetectorModelConfig = Field(default_factory=ObjectDetectorModelConfig)
    train: ObjectDetectorTrainConfig = Field(default_factory=ObjectDetectorTrainConfig)
    eval: ObjectDetectorEvalConfig = Field(default_factory=ObjectDetectorEvalConfig)
    predict: ObjectDetectorPredictConfig = Field(default_factory=ObjectDetectorPredictConfig)
