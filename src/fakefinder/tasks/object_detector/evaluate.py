"""Evaluating a YOLO detector on a split of its dataset: mAP@0.5, mAP@0.5:0.95, precision and recall,
overall and per class, sample images drawn with predicted and true boxes; metrics.json and a report."""

from __future__ import annotations

import html
from pathlib import Path

from fakefinder.config import Config, ConfigError
from fakefinder.core.events import as_events
from fakefinder.core.results import EvalSummary
from fakefinder.tasks.object_detector.predict import draw_boxes

KIND = "object_detector"


def validate(
    model, data: dict, imgsz: int, batch: int, conf: float, iou: float, split: str, device: str, folder: Path
) -> dict:
    """mAP@0.5, mAP@0.5:0.95, precision and recall of `model` on a staged split, overall and per class
    (Ultralytics' validator: COCO's 101-point interpolation over IoU 0.5:0.95)."""
    from ultralytics.models.yolo.detect import DetectionValidator

    folder.mkdir(parents=True, exist_ok=True)
    args = {
        "data": data["yaml_file"],
        "imgsz": imgsz,
        "batch": batch,
        "conf": conf,
        "iou": iou,
        "split": split,
        "device": device,
        "plots": False,
        "save_json": False,
        "verbose": False,
        "mode": "val",
        "task": "detect",
        "project": str(Path(folder).resolve().parent),  # a relative one would go under Ultralytics' runs_dir
        "name": folder.name,
        "exist_ok": True,
    }
    from fakefinder.tasks.object_detector.model import without_integrations

    validator = without_integrations(DetectionValidator)(args=args)
    import copy

    validator(model=copy.deepcopy(model).eval())  # the validator fuses the layers it is given
    m = validator.metrics
    box = m.box
    names = data["names"]
    per_class = {}
    counts = getattr(m, "nt_per_class", None)
    if counts is None:
        counts = getattr(validator, "nt_per_class", None)
    for position, cls in enumerate(m.ap_class_index):
        per_class[names[int(cls)]] = {
            "map50": float(box.ap50[position]),
            "map50_95": float(box.ap[position]),
            "precision": float(box.p[position]),
            "recall": float(box.r[position]),
            "instances": int(counts[int(cls)]) if counts is not None else None,
        }
    for cls, name in names.items():
        if name not in per_class:
            per_class[name] = {
                "map50": 0.0,
                "map50_95": 0.0,
                "precision": 0.0,
                "recall": 0.0,
                "instances": int(counts[int(cls)]) if counts is not None else 0,
            }
    overall = {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "precision": float(box.mp),
        "recall": float(box.mr),
        "images": len(validator.dataloader.dataset),
        "instances": int(sum(counts)) if counts is not None else None,
    }
    return {"split": split, "overall": overall, "per_class": per_class}


def _truth(sample, size: tuple[int, int], names: list[str]) -> list[dict]:
    width, height = size
    out = []
    for line in sample.lines:
        c, cx, cy, w, h = line.split()
        cx, cy, w, h = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
        out.append(
            {"class": names[int(c)], "x1": cx - w / 2, "y1": cy - h / 2, "x2": cx + w / 2, "y2": cy + h / 2}
        )
    return out


def _sample_figures(predictor, samples, names: list[str], out: Path, name: str) -> list[str]:
    """The samples drawn with predicted and true boxes under out/samples/<model>, as report HTML."""
    from PIL import Image

    folder = out / "samples" / name
    folder.mkdir(parents=True, exist_ok=True)
    predicted = predictor.boxes([s.image for s in samples])
    parts = [f"<h2>{html.escape(name)}: sample predictions (white: true boxes)</h2><div>"]
    for index, (sample, boxes) in enumerate(zip(samples, predicted)):
        with Image.open(sample.image) as im:
            im = im.convert("RGB")
            file = folder / f"{index:03d}_{sample.image.stem}.png"
            draw_boxes(im, boxes, _truth(sample, im.size, names)).save(file)
        rel = file.relative_to(out).as_posix()
        parts.append(
            f'<figure style="display:inline-block;margin:4px"><img src="{html.escape(rel)}" '
            f'style="max-width:320px"><figcaption>{html.escape(sample.image.name)}: '
            f"{len(boxes)} predicted, {len(sample.lines)} true</figcaption></figure>"
        )
    parts.append("</div>")
    return parts


def evaluate(config: Config, models: list[Path], events=None) -> EvalSummary:
    """Each model on `object_detector.eval.split`: mAP@0.5, mAP@0.5:0.95, precision, recall overall and per
    class; metrics.json, report.html with sample predictions drawn, label_report.json."""
    from fakefinder.core.devices import pick_device
    from fakefinder.core.files import atomic_write_json, atomic_write_text
    from fakefinder.engine.report import PAGE_HEAD, html_table, model_name
    from fakefinder.tasks.object_detector.data import checked_dataset, data_dict, stage
    from fakefinder.tasks.object_detector.model import yolo_device
    from fakefinder.tasks.object_detector.predict import BoxPredictor
    from fakefinder.tasks.registry import read_model

    events = as_events(events)
    cfg = config.object_detector
    split = cfg.eval.split
    out = Path(config.evaluate.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = checked_dataset(config, events, splits=(split,), report_to=out / "label_report.json")
    data = data_dict(stage(dataset, out / "dataset"))
    device = yolo_device(
        pick_device(config.evaluate.device if config.evaluate.device != "auto" else cfg.train.device)
    )
    metrics: dict = {"kind": KIND, "split": split, "models": {}}
    parts = [PAGE_HEAD, "<h1>fakefinder evaluation: object detector</h1>"]
    summary = []
    samples = dataset.splits[split][: cfg.eval.samples]
    for path in models:
        artifact = read_model(path)
        if artifact.kind != KIND:
            raise ConfigError(f"{path} holds a {artifact.kind} model, not an {KIND}")
        if artifact.classes != dataset.names:
            raise ConfigError(
                f"{dataset.yaml_file}: classes {dataset.names} differ from the model's {artifact.classes}"
            )
        predictor = BoxPredictor(artifact, device)
        name = model_name(Path(path))
        result = validate(
            predictor.model,
            data,
            predictor.imgsz,
            config.evaluate.batch_size,
            cfg.eval.conf,
            cfg.eval.iou,
            split,
            device,
            out / "ultralytics",
        )
        metrics["models"][name] = {"path": str(path), **result}
        o = result["overall"]
        summary.append(
            {
                "model": name,
                "split": split,
                "images": o["images"],
                "instances": o["instances"],
                "mAP@0.5": o["map50"],
                "mAP@0.5:0.95": o["map50_95"],
                "precision": o["precision"],
                "recall": o["recall"],
            }
        )
        events.log(
            f"{name} on {split}: mAP@0.5 {o['map50']:.4f}, mAP@0.5:0.95 {o['map50_95']:.4f}, precision "
            f"{o['precision']:.4f}, recall {o['recall']:.4f} ({o['images']} images)",
            "evaluate",
        )
        parts.append(f"<h2>{html.escape(name)}: per class</h2>")
        parts.append(
            html_table(
                [
                    {
                        "class": c,
                        "instances": m["instances"],
                        "mAP@0.5": m["map50"],
                        "mAP@0.5:0.95": m["map50_95"],
                        "precision": m["precision"],
                        "recall": m["recall"],
                    }
                    for c, m in result["per_class"].items()
                ],
                ["class", "instances", "mAP@0.5", "mAP@0.5:0.95", "precision", "recall"],
            )
        )
        if samples:
            parts.extend(_sample_figures(predictor, samples, dataset.names, out, name))
    parts.insert(2, "<h2>Summary</h2>" + html_table(summary, list(summary[0]) if summary else []))
    parts.append("</body></html>")
    metrics_path = atomic_write_json(out / "metrics.json", metrics)
    report_path = atomic_write_text(out / "report.html", "\n".join(parts))
    events.result("evaluate", metrics, f"report: {report_path}")
    return EvalSummary(KIND, out, metrics, metrics_path, report_path)
