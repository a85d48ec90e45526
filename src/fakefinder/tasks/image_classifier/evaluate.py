"""Evaluating an image classifier on a split of its class folders (default: test, read once per
finished recipe): accuracy, top-5, per-class precision/recall/F1, macro-F1, the N x N confusion
matrix; metrics.json, predictions.csv, plots and report.html."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fakefinder.config import Config, ConfigError
from fakefinder.core.results import EvalSummary
from fakefinder.tasks.image_classifier.data import folders_of

KIND = "image_classifier"


def _eval_sets(config: Config, folders) -> list[tuple[str, pd.DataFrame]]:
    """`evaluate.sets` name splits of the class folders (default: test, read once per finished recipe)."""
    specs = config.evaluate.sets or []
    if any(spec.manifest is not None for spec in specs):
        raise ConfigError(
            "evaluate.sets.*.manifest: an image classifier evaluates class folders (classifier.data_dir); "
            "name a split instead"
        )
    wanted = [(spec.name, spec.split) for spec in specs] or [("test", "test")]
    sets = []
    for name, split in wanted:
        rows = folders.rows[folders.rows.split == split].reset_index(drop=True)
        if rows.empty:
            raise ConfigError(
                f"{folders.root / split}: no images to evaluate on (add the {split}/ folder of class "
                "folders, or name another split in evaluate.sets)"
            )
        sets.append((name, rows))
    return sets


@torch.no_grad()
def _probabilities(model, artifact, rows: pd.DataFrame, root: Path, config: Config, device) -> np.ndarray:
    """Class probabilities per row, read by the training loader itself (same pixels as validation)."""
    from torch.utils.data import DataLoader

    from fakefinder.tasks.classification.data import CropDataset, opencv_single_threaded

    p = artifact.preprocessing
    dataset = CropDataset(rows, root, p["input_size"], p["mean"], p["std"], classes=artifact.classes)
    loader = DataLoader(
        dataset, batch_size=config.evaluate.batch_size, num_workers=config.evaluate.num_workers
    )
    out = []
    with opencv_single_threaded():
        batches = iter(loader)
    for images, _ in batches:
        out.append(torch.softmax(model(images.to(device)).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(artifact.classes)))


def evaluate(config: Config, models: list[Path], events=None) -> EvalSummary:
    """Each model on each set: metrics.json, predictions.csv, confusion-matrix plots, report.html."""
    from fakefinder.core.devices import pick_device
    from fakefinder.core.events import as_events
    from fakefinder.core.files import atomic_write, atomic_write_json
    from fakefinder.core.process import flush_denormal
    from fakefinder.engine.metrics import multiclass_metrics
    from fakefinder.engine.report import model_name
    from fakefinder.tasks.classification.model import from_artifact
    from fakefinder.tasks.image_classifier.report import write_classifier_report
    from fakefinder.tasks.registry import read_model

    events = as_events(events)
    folders = folders_of(config)
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
                raise ConfigError(
                    f"{folders.root}: class(es) {missing} are not among the model's {artifact.classes}"
                )
            model = from_artifact(artifact, device)
            name = model_name(path)
            entry = {"path": str(path), "classes": artifact.classes, "sets": {}}
            for set_name, rows in sets:
                probs = _probabilities(model, artifact, rows, folders.root, config, device)
                labels = np.array([artifact.classes.index(label) for label in rows.label])
                entry["sets"][set_name] = multiclass_metrics(labels, probs, artifact.classes)
                predicted = [artifact.classes[i] for i in probs.argmax(axis=1)]
                tables.append(
                    pd.DataFrame(
                        {
                            "model": name,
                            "set": set_name,
                            "path": rows.path,
                            "label": rows.label,
                            "prediction": predicted,
                            **{f"prob_{c}": probs[:, i] for i, c in enumerate(artifact.classes)},
                        }
                    )
                )
                m = entry["sets"][set_name]
                events.log(
                    f"{name} on {set_name}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}"
                    + (f", top-5 {m['top5_accuracy']:.4f}" if "top5_accuracy" in m else "")
                    + f" ({m['n']} images)",
                    "evaluate",
                )
            metrics["models"][name] = entry
    predictions = pd.concat(tables, ignore_index=True)
    predictions_path = atomic_write(out / "predictions.csv", lambda h: predictions.to_csv(h, index=False))
    metrics_path = atomic_write_json(out / "metrics.json", metrics)
    report_path = write_classifier_report(out, metrics)
    events.result("evaluate", metrics, f"report: {report_path}")
    return EvalSummary(KIND, out, metrics, metrics_path, report_path, {"predictions": predictions_path})
