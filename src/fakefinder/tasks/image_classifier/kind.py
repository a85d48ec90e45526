"""The `image_classifier` kind's functions: train on class folders with the shared loop, load an
artifact for predict (`id,label` + per-class probabilities), evaluate on the test folder
(accuracy, top-5, per-class precision/recall/F1, macro-F1, the N x N confusion matrix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fakefinder.config import Config, ConfigError
from fakefinder.engine.predict import FilePredictor
from fakefinder.tasks.classification.scoring import to_batch

KIND = "image_classifier"


def default_model(config: Config) -> Path:
    return Path(config.train.output_dir) / "model"


def dataset_settings(path: Path) -> dict:
    return {"classifier.data_dir": str(path)}


def _folders(config: Config):
    from fakefinder.tasks.image_classifier.data import read_class_folders

    if config.classifier.data_dir is None:
        raise ConfigError("classifier.data_dir is required: a folder with train/<class>/, val/<class>/ (and test/)")
    return read_class_folders(config.classifier.data_dir, config.classifier.check_images)


def preprocessing(config: Config, info: dict) -> dict:
    """The images as training read them: whole, resized to the input size (no face detection)."""
    size = int(info["image_size"])
    return {"input_size": size, "mean": list(info["mean"]), "std": list(info["std"]), "tta": config.model.tta,
            "channels_last": config.train.channels_last, "faces": {"detect": False, "size": size, "square": True},
            "frames": {"frames_per_video": config.data.frames_per_video, "frame_stride": config.data.frame_stride,
                       "seek": config.data.seek},
            "crop": {"format": "none"}}


def train(config: Config, resume: bool | str | Path = False, events=None, overwrite: bool = False):
    from fakefinder.core.artifact import training_summary, write_artifact
    from fakefinder.tasks.classification.train import TrainData
    from fakefinder.tasks.classification.train import train as run
    from fakefinder.tasks.classification.model import architecture

    folders = _folders(config)
    rows = folders.rows
    data = TrainData(rows[rows.split == "train"].reset_index(drop=True), rows[rows.split == "val"].reset_index(drop=True),
                     folders.root, folders.classes, False, str(folders.root), folders.failures)
    plain = config.model_dump(mode="json")

    def save_model(folder: Path, weights: dict, state: dict) -> None:
        write_artifact(folder, KIND, architecture(state["model_info"]), folders.classes,
                       preprocessing(config, state["model_info"]), weights, None,
                       training_summary({**state, "config": plain}))

    return run(config, data, resume=resume, events=events, save_model=save_model, overwrite=overwrite)


class ClassifierPredictor(FilePredictor):
    """Whole images (or a video's sampled frames, averaged) -> class probabilities and a label."""

    face_based = False

    def __init__(self, artifact, device, config: Config) -> None:
        from fakefinder.tasks.classification.model import from_artifact

        self.artifact = artifact
        self.preprocessing = artifact.preprocessing
        self.classes = artifact.classes
        self.device = device
        self.model = from_artifact(artifact, device)
        self.threshold = None

    @torch.no_grad()
    def probabilities(self, images: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        p = self.preprocessing
        out = []
        for start in range(0, len(images), batch_size):
            x = to_batch(images[start : start + batch_size], p["input_size"], p["mean"], p["std"])
            out.append(torch.softmax(self.model(x.to(self.device)).float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def _columns(self) -> list[str]:
        return [f"prob_{name}" for name in self.classes]

    def score(self, crops: list[np.ndarray], batch_size: int) -> np.ndarray:
        return self.probabilities(crops, batch_size)

    def file_result(self, file_id: str, found, probs, pc, threshold) -> tuple[dict, list[dict]]:
        if not found.crops:
            return {"label": "", **{c: float("nan") for c in self._columns()}}, []
        mean = probs.mean(axis=0)  # a video: the mean over its sampled frames
        frames = [{"id": file_id, "frame_index": c.frame_index, "label": self.classes[int(p.argmax())],
                   **dict(zip(self._columns(), map(float, p)))} for c, p in zip(found.crops, probs)]
        return {"label": self.classes[int(mean.argmax())], **dict(zip(self._columns(), map(float, mean)))}, frames

    def submission_columns(self, pc) -> list[str]:
        return ["id", "label"] + ([] if pc.format == "label" else self._columns())

    def details(self) -> dict:
        return {"models": [str(self.artifact.path)], "classes": self.classes}


def load(artifacts: list, device="cpu", config: Config | None = None):
    if len(artifacts) != 1:
        raise ConfigError("predict: an image classifier runs alone (no ensemble)")
    return ClassifierPredictor(artifacts[0], device, config or Config(task=KIND))


def _eval_sets(config: Config, folders) -> list[tuple[str, pd.DataFrame]]:
    """`evaluate.sets` name splits of the class folders (default: test, read once per finished recipe)."""
    specs = config.evaluate.sets or []
    if any(spec.manifest is not None for spec in specs):
        raise ConfigError("evaluate.sets.*.manifest: an image classifier evaluates class folders (classifier.data_dir); "
                          "name a split instead")
    wanted = [(spec.name, spec.split) for spec in specs] or [("test", "test")]
    sets = []
    for name, split in wanted:
        rows = folders.rows[folders.rows.split == split].reset_index(drop=True)
        if rows.empty:
            raise ConfigError(f"{folders.root / split}: no images to evaluate on (add the {split}/ folder of class "
                              "folders, or name another split in evaluate.sets)")
        sets.append((name, rows))
    return sets


@torch.no_grad()
def _probabilities(model, artifact, rows: pd.DataFrame, root: Path, config: Config, device) -> np.ndarray:
    """Class probabilities per row, read by the training loader itself (same pixels as validation)."""
    from torch.utils.data import DataLoader

    from fakefinder.tasks.classification.data import CropDataset, opencv_single_threaded

    p = artifact.preprocessing
    dataset = CropDataset(rows, root, p["input_size"], p["mean"], p["std"], classes=artifact.classes)
    loader = DataLoader(dataset, batch_size=config.evaluate.batch_size, num_workers=config.evaluate.num_workers)
    out = []
    with opencv_single_threaded():
        batches = iter(loader)
    for images, _ in batches:
        out.append(torch.softmax(model(images.to(device)).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(artifact.classes)))


def evaluate(config: Config, models: list[Path], events=None) -> dict:
    """Each model on each set: metrics.json, predictions.csv, confusion-matrix plots, report.html."""
    from fakefinder.core.devices import pick_device
    from fakefinder.core.events import as_events
    from fakefinder.core.files import atomic_write, atomic_write_json
    from fakefinder.core.process import flush_denormal
    from fakefinder.engine.report import model_name
    from fakefinder.engine.metrics import multiclass_metrics
    from fakefinder.tasks.classification.model import from_artifact
    from fakefinder.tasks import read_model
    from fakefinder.tasks.image_classifier.report import write_classifier_report

    events = as_events(events)
    folders = _folders(config)
    sets = _eval_sets(config, folders)
    device = pick_device(config.evaluate.device)
    out = Path(config.evaluate.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"kind": KIND, "models": {}}
    tables = []
    with flush_denormal():
        for path in models:
            artifact = read_model(path)
            if artifact.kind != KIND:
                raise ConfigError(f"{path} holds a {artifact.kind} model, not an {KIND}")
            missing = sorted(set(folders.classes) - set(artifact.classes))
            if missing:
                raise ConfigError(f"{folders.root}: class(es) {missing} are not among the model's {artifact.classes}")
            model = from_artifact(artifact, device)
            name = model_name(path)
            entry = {"path": str(path), "classes": artifact.classes, "sets": {}}
            for set_name, rows in sets:
                probs = _probabilities(model, artifact, rows, folders.root, config, device)
                labels = np.array([artifact.classes.index(label) for label in rows.label])
                entry["sets"][set_name] = multiclass_metrics(labels, probs, artifact.classes)
                predicted = [artifact.classes[i] for i in probs.argmax(axis=1)]
                tables.append(pd.DataFrame({"model": name, "set": set_name, "path": rows.path, "label": rows.label,
                                            "prediction": predicted,
                                            **{f"prob_{c}": probs[:, i] for i, c in enumerate(artifact.classes)}}))
                m = entry["sets"][set_name]
                events.log(f"{name} on {set_name}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}"
                           + (f", top-5 {m['top5_accuracy']:.4f}" if "top5_accuracy" in m else "")
                           + f" ({m['n']} images)", "evaluate")
            metrics["models"][name] = entry
    predictions = pd.concat(tables, ignore_index=True)
    predictions_path = atomic_write(out / "predictions.csv", lambda h: predictions.to_csv(h, index=False))
    metrics_path = atomic_write_json(out / "metrics.json", metrics)
    report_path = write_classifier_report(out, metrics)
    events.result("evaluate", metrics, f"report: {report_path}")
    return {"metrics": metrics, "metrics_path": metrics_path, "predictions_path": predictions_path,
            "report_path": report_path, "output_dir": out}
