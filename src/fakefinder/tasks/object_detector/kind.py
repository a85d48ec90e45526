"""The `object_detector` kind's functions: train a YOLO detector on a checked YOLO dataset (resumable
after a kill), load its artifact, predict boxes on images, evaluate mAP@0.5 and mAP@0.5:0.95 per class
with drawn sample predictions, export to ONNX."""

from __future__ import annotations

import html
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fakefinder.config import Config, ConfigError, save_config
from fakefinder.core.events import as_events
from fakefinder.tasks.object_detector.config import IMAGE_EXTENSIONS
from fakefinder.tasks.object_detector.predictor import BoxPredictor

KIND = "object_detector"
RUN_FILES = ("checkpoints", "model")  # what shows that an output folder holds a run


def default_model(config: Config) -> Path:
    return Path(config.detector.train.output_dir) / "model"


def dataset_settings(path: Path) -> dict:
    from fakefinder.tasks.object_detector.labels import find_data_yaml

    return {"detector.data.path": str(find_data_yaml(path))}


def _checked(config: Config, events, splits=("train", "val"), report_to: Path | None = None):
    """The dataset read and checked; the report written to `report_to` (label_report.json), each
    problem warned with file and line."""
    from fakefinder.core.files import atomic_write_json
    from fakefinder.tasks.object_detector.labels import LabelError, read_dataset

    d = config.detector.data
    if d.path is None:
        raise ConfigError("detector.data.path is required: a YOLO dataset's data.yaml or its folder")
    try:
        dataset = read_dataset(d.path, d.bad_labels, d.check_images, splits, d.confine)
    except LabelError as exc:
        if report_to is not None:
            atomic_write_json(report_to, exc.report)
        raise
    report = dataset.report()
    if report_to is not None:
        atomic_write_json(report_to, report)
    for note in dataset.notes:
        events.warning(note, "train")
    by_kind: dict[str, list] = {}
    for problem in dataset.problems:
        by_kind.setdefault(problem.kind, []).append(problem)
    for kind, found in by_kind.items():
        shown = "; ".join(str(p) for p in found[:10])
        events.warning(f"{len(found)} {kind.replace('_', ' ')}(s){' (left out)' if kind != 'orphan_label' else ''}: "
                       f"{shown}{' ...' if len(found) > 10 else ''}", "train")
    for split, c in report["splits"].items():
        events.log(f"{split}: {c['images']} images ({c['background']} background, {c['left_out']} left out), "
                   f"{c['boxes']} boxes: " + ", ".join(f"{k} {v}" for k, v in c["per_class"].items()), "train")
    return dataset


def _amp(precision: str, device: str) -> bool | str:
    """Ultralytics' `amp` for a precision setting. auto on a GPU: bf16 where it has it (Ultralytics'
    fp16 check would download and unpickle a reference model), else fp16."""
    cuda = device not in ("cpu", "mps")
    if precision == "auto":
        return ("bf16" if torch.cuda.is_bf16_supported() else True) if cuda else False
    if precision == "fp16" and not cuda:
        raise ConfigError("detector.train.precision=fp16 needs a CUDA GPU; use bf16 or fp32")
    return {"fp32": False, "fp16": True, "bf16": "bf16"}[precision]


def _device(name: str) -> str:
    if "," in name:
        raise ConfigError(f"detector.train.device={name}: one GPU or the CPU (several GPUs would need Ultralytics "
                          "to re-import fakefinder's trainer in each process; not supported yet)")
    if name != "auto":
        return name
    return "0" if torch.cuda.is_available() else "cpu"


AUGMENT_KEYS = {"hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
                "fliplr", "bgr", "mosaic", "mixup", "cutmix", "copy_paste", "copy_paste_mode", "erasing", "box", "cls",
                "dfl", "warmup_momentum", "warmup_bias_lr", "dropout", "multi_scale", "rect", "max_det", "freeze"}

def _arguments(config: Config, output: Path) -> dict:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    t = config.detector.train
    device = _device(t.device)
    args = {"model": config.detector.model.arch, "data": str(output / "dataset" / "data.yaml"), "task": "detect",
            "mode": "train", "epochs": t.epochs, "imgsz": t.imgsz, "batch": t.batch, "nbs": t.nbs,
            "optimizer": t.optimizer, "lr0": t.lr0, "lrf": t.lrf, "momentum": t.momentum,
            "weight_decay": t.weight_decay, "warmup_epochs": t.warmup_epochs, "cos_lr": t.cos_lr,
            "patience": t.patience, "close_mosaic": t.close_mosaic, "amp": _amp(t.precision, device),
            "workers": t.workers, "cache": t.cache, "seed": t.seed, "deterministic": t.deterministic,
            "device": device, "project": str(output), "name": "ultralytics", "exist_ok": True, "pretrained": False,
            "plots": False, "save": True, "val": True, "verbose": False, "save_period": -1}
    for key, value in t.augment.items():
        if key not in AUGMENT_KEYS:
            import difflib

            close = difflib.get_close_matches(key, sorted(AUGMENT_KEYS), n=1)
            raise ConfigError(f"detector.train.augment.{key}: not an augmentation or loss setting fakefinder passes "
                              f"to Ultralytics{f' (did you mean {close[0]!r}?)' if close else ''}; known: "
                              f"{', '.join(sorted(AUGMENT_KEYS))}")
        if key not in DEFAULT_CFG_DICT:
            raise ConfigError(f"detector.train.augment.{key}: this Ultralytics version has no such argument")
        args[key] = value
    return args


def train(config: Config, resume: bool | str = False, events=None, overwrite: bool = False) -> dict:
    """Train as configured; returns a summary (paths, per-epoch history, final per-class val metrics).
    A folder that holds a run is refused unless resumed or `overwrite`; its lock is held meanwhile."""
    from fakefinder.core.runlock import guarded_run
    from fakefinder.tasks.object_detector.yolo import require

    require()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("object_detector: launch without torchrun; several GPUs are detector.train.device=0,1 "
                          "(Ultralytics starts its own DDP processes)")
    output = Path(config.detector.train.output_dir)
    events = as_events(events)
    with guarded_run(output, RUN_FILES, bool(resume), overwrite, "a detector training run",
                     "fakefinder train (object_detector)", events):
        return _train(config, resume, events, overwrite and not resume)


def _train(config: Config, resume, events, overwrite: bool) -> dict:
    from fakefinder.core.runlock import clear_run
    from fakefinder.tasks.object_detector import yolo
    from fakefinder.tasks.object_detector.labels import data_dict, stage

    cfg = config.detector
    output = Path(cfg.train.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    dataset = _checked(config, events, report_to=output / "label_report.json")  # train and val only
    spec = yolo.model_yaml(cfg.model.arch)
    start = yolo.start_weights(cfg.model.weights) if cfg.model.weights and not resume else None
    checkpoint = None
    if resume:
        folder = Path(resume) if isinstance(resume, (str, Path)) else yolo.latest(output)
        if folder is None:
            events.log(f"nothing to resume in {output} (no complete checkpoint): a fresh run", "train")
            start = yolo.start_weights(cfg.model.weights) if cfg.model.weights else None
        else:
            checkpoint = yolo.read_checkpoint(folder)
            events.log(f"resuming from {folder} (epoch {checkpoint['state']['epoch'] + 1} of "
                       f"{checkpoint['state']['epochs']} done)", "train")
    if overwrite:  # only now: a dataset or model that fails its check never costs the old run
        clear_run(output, RUN_FILES + ("ultralytics",))
    save_config(config, output / "config.yaml")
    data = data_dict(stage(dataset, output / "dataset"))
    args = _arguments(config, output)
    stop = threading.Event()
    started = time.perf_counter()
    done_before = checkpoint["state"]["epoch"] + 1 if checkpoint else 0
    finished = bool(checkpoint and checkpoint["state"].get("finished"))  # its last epoch, or early stopping
    history: list[dict] = []
    if done_before < cfg.train.epochs and not finished:
        trainer = yolo.trainer_class(spec, data, output, start, checkpoint, events, stop)(overrides=args)
        yolo.integration_callbacks(trainer)
        _report_through_events(trainer, events, stop, history)
        from fakefinder.engine.hf import stop_on_signals

        with stop_on_signals(stop, events):
            trainer.train()
        if trainer.interrupted:
            events.log(f"stopped in epoch {trainer.epoch + 1}: resume (--resume) continues from the last complete "
                       f"epoch's checkpoint ({output / yolo.CHECKPOINT / 'last'})", "train")
            return {"output": str(output), "model": None, "stopped": "interrupted", "history": history,
                    "seconds": time.perf_counter() - started}
    else:
        events.log(f"{output}: training finished at epoch {done_before}; writing the model from its best weights",
                   "train")
    seconds = time.perf_counter() - started
    best = output / yolo.CHECKPOINT / "best.safetensors"
    if not best.is_file():
        raise ConfigError(f"{output}: training left no best weights ({best})")
    from safetensors.torch import load_file

    model = yolo.build(spec, dataset.names)
    model.load_state_dict(load_file(str(best)))
    best_info = json.loads((output / yolo.CHECKPOINT / "best.json").read_text())
    val = validate(model, data, cfg.train.imgsz, cfg.train.batch, cfg.eval.conf, cfg.eval.iou, "val",
                   _device(cfg.train.device), output / "val")
    model_dir = save_artifact(model, spec, dataset.names, config, {
        "epochs_run": len(_results(output)), "best_epoch": best_info["epoch"], "selected_on": {
            "metric": "fitness (val mAP@0.5:0.95)", "value": best_info["fitness"]},
        "validation": val["overall"], "per_class": val["per_class"], "data": dataset.report()["splits"],
        "config": config.model_dump(mode="json")})
    events.result("train", {"output": str(output), "model": str(model_dir), "val": val, "seconds": seconds},
                  f"trained to epoch {best_info['epoch']} (best) in {seconds:.0f} s; val mAP@0.5 "
                  f"{val['overall']['map50']:.4f}, mAP@0.5:0.95 {val['overall']['map50_95']:.4f}; model: {model_dir}")
    return {"output": str(output), "model": str(model_dir), "stopped": None, "val": val, "seconds": seconds,
            "history": _results(output), "data": dataset.report()}


def _results(output: Path) -> list[dict]:
    """Per-epoch rows of the run's results.csv (losses, precision, recall, mAPs, learning rates)."""
    import csv

    file = Path(output) / "ultralytics" / "results.csv"
    if not file.is_file():
        return []
    with open(file, newline="") as handle:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _report_through_events(trainer, events, stop: threading.Event, history: list) -> None:
    """Each batch advances a stage of epochs x batches; each epoch's row is a metrics event; `stop`
    ends training between batches."""
    running = {}

    def on_train_start(tr):
        batches = len(tr.train_loader)
        running["stage"] = events.stage("detector train", total=tr.epochs * batches, step=tr.start_epoch * batches)
        running["batches"] = batches

    def on_train_batch_end(tr):
        stage = running.get("stage")
        if stage is not None:
            stage.advance(1)
        if stop.is_set():
            tr.interrupted = True
            tr.stop = True

    def on_fit_epoch_end(tr):
        if tr.interrupted:
            return
        row = {"epoch": tr.epoch + 1, **{k: float(v) for k, v in tr.label_loss_items(tr.tloss).items()},
               **{k: float(v) for k, v in (tr.metrics or {}).items()}, **{k: float(v) for k, v in tr.lr.items()}}
        history.append(row)
        events.metrics("detector", row, f"epoch {tr.epoch + 1}/{tr.epochs}: mAP@0.5 "
                       f"{row.get('metrics/mAP50(B)', float('nan')):.4f}, mAP@0.5:0.95 "
                       f"{row.get('metrics/mAP50-95(B)', float('nan')):.4f}")

    def on_train_end(tr):
        if running.get("stage") is not None:
            events.end(running["stage"])

    trainer.add_callback("on_train_start", on_train_start)
    trainer.add_callback("on_train_batch_end", on_train_batch_end)
    trainer.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    trainer.add_callback("on_train_end", on_train_end)


def save_artifact(model, spec: dict, names: list[str], config: Config, training: dict, folder: Path | None = None):
    from fakefinder.core.artifact import write_artifact
    from fakefinder.tasks.object_detector.yolo import _state_dict, version

    cfg = config.detector
    folder = Path(folder or default_model(config))
    architecture = {"backend": "ultralytics", "ultralytics": version(), "arch": cfg.model.arch,
                    "yaml": json.loads(json.dumps(model.yaml, default=str))}
    preprocessing = {"input_size": cfg.train.imgsz, "letterbox": True, "conf": cfg.predict.conf,
                     "iou": cfg.predict.iou, "max_det": cfg.predict.max_det, "crop": {"format": "none"}}
    return write_artifact(folder, KIND, architecture, names, preprocessing, _state_dict(model), None, training).path


# ---------------------------------------------------------------------------------------------
# evaluation


def validate(model, data: dict, imgsz: int, batch: int, conf: float, iou: float, split: str, device: str,
             folder: Path) -> dict:
    """mAP@0.5, mAP@0.5:0.95, precision and recall of `model` on a staged split, overall and per class
    (Ultralytics' validator: COCO's 101-point interpolation over IoU 0.5:0.95)."""
    from ultralytics.models.yolo.detect import DetectionValidator

    folder.mkdir(parents=True, exist_ok=True)
    args = {"data": data["yaml_file"], "imgsz": imgsz, "batch": batch, "conf": conf, "iou": iou, "split": split,
            "device": device, "plots": False, "save_json": False, "verbose": False, "mode": "val",
            "task": "detect", "project": str(folder.parent), "name": folder.name, "exist_ok": True}
    from fakefinder.tasks.object_detector.yolo import without_integrations

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
        per_class[names[int(cls)]] = {"map50": float(box.ap50[position]), "map50_95": float(box.ap[position]),
                                      "precision": float(box.p[position]), "recall": float(box.r[position]),
                                      "instances": int(counts[int(cls)]) if counts is not None else None}
    for cls, name in names.items():
        if name not in per_class:
            per_class[name] = {"map50": 0.0, "map50_95": 0.0, "precision": 0.0, "recall": 0.0,
                               "instances": int(counts[int(cls)]) if counts is not None else 0}
    overall = {"map50": float(box.map50), "map50_95": float(box.map), "precision": float(box.mp),
               "recall": float(box.mr), "images": len(validator.dataloader.dataset),
               "instances": int(sum(counts)) if counts is not None else None}
    return {"split": split, "overall": overall, "per_class": per_class}


# ---------------------------------------------------------------------------------------------
# predict


def load(artifacts: list, device="cpu", config: Config | None = None):
    if len(artifacts) != 1:
        raise ConfigError("predict: an object detector runs alone (no ensemble)")
    return BoxPredictor(artifacts[0], str(device))


def _input_images(inputs) -> list[Path]:
    files = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif not path.is_file():
            raise FileNotFoundError(f"predict input not found: {path}")
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(path)
        elif path.suffix.lower() == ".txt":
            files += [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
        else:
            raise ConfigError(f"{path}: an object detector reads images ({', '.join(IMAGE_EXTENSIONS)}) or a .txt "
                              "list of them")
    return files


def predict(config: Config, events=None):
    """Boxes for the images in `predict.inputs`: a CSV with one row per box (`id, class, score, x1, y1,
    x2, y2` in pixels of the original image; an image without boxes has one row with an empty class),
    or JSON lines (one per image) when `predict.output` ends in .jsonl."""
    import pandas as pd

    from fakefinder.core.devices import pick_device
    from fakefinder.core.files import atomic_write, atomic_write_text
    from fakefinder.engine.predict import PredictResult
    from fakefinder.tasks.registry import task_for_models

    events = as_events(events)
    pc = config.predict
    dc = config.detector.predict
    _, artifacts = task_for_models([Path(p) for p in pc.models], config)
    files = _input_images(pc.inputs)
    if not files:
        raise ConfigError(f"no images found in {', '.join(map(str, pc.inputs))}")
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"predict input not found: {file}")
    predictor = load(artifacts, pick_device(pc.device), config)
    started = time.perf_counter()
    stage = events.stage("predict", total=len(files))
    rows, per_image = [], []
    output = Path(pc.output)
    drawn = output.with_name(output.stem + "_drawn") if dc.draw else None
    for start in range(0, len(files), pc.batch_size):
        chunk = files[start : start + pc.batch_size]
        for file, boxes in zip(chunk, predictor.boxes(chunk, dc.conf, dc.iou, dc.max_det)):
            per_image.append({"id": file.name, "path": str(file), "boxes": boxes})
            rows += [{"id": file.name, **{k: b[k] for k in ("class", "score", "x1", "y1", "x2", "y2")}}
                     for b in boxes] or [{"id": file.name, "class": "", "score": float("nan"), "x1": float("nan"),
                                          "y1": float("nan"), "x2": float("nan"), "y2": float("nan")}]
            if drawn is not None:
                from PIL import Image

                drawn.mkdir(parents=True, exist_ok=True)
                with Image.open(file) as im:
                    draw_boxes(im.convert("RGB"), boxes, []).save(drawn / (file.stem + ".png"))
        stage.advance(len(chunk))
    events.end(stage)
    seconds = time.perf_counter() - started
    table = pd.DataFrame(rows).rename(columns={"id": pc.id_column})
    if output.suffix.lower() == ".jsonl":
        atomic_write_text(output, "".join(json.dumps(r) + "\n" for r in per_image))
    else:
        atomic_write(output, lambda h: table.to_csv(h, index=False))
    rate = len(files) / seconds if seconds else float("inf")
    boxes = sum(len(r["boxes"]) for r in per_image)
    events.result("predict", {"images": len(files), "boxes": boxes, "seconds": seconds, "output": str(output)},
                  f"{boxes} box(es) on {len(files)} image(s) in {seconds:.1f} s ({rate:.2f}/s)\nboxes: {output}")
    return PredictResult(output, None, table, seconds, rate, {"images": per_image})


COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def draw_boxes(image, predicted: list[dict], truth: list[dict]):
    """`image` (PIL, RGB) with true boxes in white and predicted ones in their class colour, labelled."""
    from PIL import ImageDraw

    image = image.copy()
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 200))
    for box in truth:
        draw.rectangle([box["x1"], box["y1"], box["x2"], box["y2"]], outline=(255, 255, 255), width=width)
    for box in predicted:
        colour = COLOURS[box["class_id"] % len(COLOURS)]
        draw.rectangle([box["x1"], box["y1"], box["x2"], box["y2"]], outline=colour, width=width)
        draw.text((box["x1"] + 2, max(0, box["y1"] - 11)), f"{box['class']} {box['score']:.2f}", fill=colour)
    return image


def _truth(sample, size: tuple[int, int], names: list[str]) -> list[dict]:
    width, height = size
    out = []
    for line in sample.lines:
        c, cx, cy, w, h = line.split()
        cx, cy, w, h = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
        out.append({"class": names[int(c)], "x1": cx - w / 2, "y1": cy - h / 2, "x2": cx + w / 2, "y2": cy + h / 2})
    return out


def evaluate(config: Config, models: list[Path], events=None) -> dict:
    """Each model on `detector.eval.split`: mAP@0.5, mAP@0.5:0.95, precision, recall overall and per
    class; metrics.json, report.html with sample predictions drawn, label_report.json."""
    from PIL import Image

    from fakefinder.core.files import atomic_write_json, atomic_write_text
    from fakefinder.engine.report import model_name
    from fakefinder.engine.report import PAGE_HEAD, html_table
    from fakefinder.tasks.registry import read_model
    from fakefinder.tasks.object_detector.labels import data_dict, stage

    events = as_events(events)
    cfg = config.detector
    split = cfg.eval.split
    out = Path(config.evaluate.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = _checked(config, events, splits=(split,), report_to=out / "label_report.json")
    data = data_dict(stage(dataset, out / "dataset"))
    device = _device(config.evaluate.device if config.evaluate.device != "auto" else cfg.train.device)
    metrics: dict = {"kind": KIND, "split": split, "models": {}}
    parts = [PAGE_HEAD, "<h1>fakefinder evaluation: object detector</h1>"]
    summary = []
    samples = dataset.splits[split][: cfg.eval.samples]
    for path in models:
        artifact = read_model(path)
        if artifact.kind != KIND:
            raise ConfigError(f"{path} holds a {artifact.kind} model, not an {KIND}")
        if artifact.classes != dataset.names:
            raise ConfigError(f"{dataset.yaml_file}: classes {dataset.names} differ from the model's "
                              f"{artifact.classes}")
        predictor = BoxPredictor(artifact, device)
        name = model_name(Path(path))
        result = validate(predictor.model, data, predictor.imgsz, config.evaluate.batch_size, cfg.eval.conf,
                          cfg.eval.iou, split, device, out / "ultralytics")
        metrics["models"][name] = {"path": str(path), **result}
        o = result["overall"]
        summary.append({"model": name, "split": split, "images": o["images"], "instances": o["instances"],
                        "mAP@0.5": o["map50"], "mAP@0.5:0.95": o["map50_95"], "precision": o["precision"],
                        "recall": o["recall"]})
        events.log(f"{name} on {split}: mAP@0.5 {o['map50']:.4f}, mAP@0.5:0.95 {o['map50_95']:.4f}, precision "
                   f"{o['precision']:.4f}, recall {o['recall']:.4f} ({o['images']} images)", "evaluate")
        parts.append(f"<h2>{html.escape(name)}: per class</h2>")
        parts.append(html_table([{"class": c, "instances": m["instances"], "mAP@0.5": m["map50"],
                                  "mAP@0.5:0.95": m["map50_95"], "precision": m["precision"], "recall": m["recall"]}
                                 for c, m in result["per_class"].items()],
                                ["class", "instances", "mAP@0.5", "mAP@0.5:0.95", "precision", "recall"]))
        if samples:
            folder = out / "samples" / name
            folder.mkdir(parents=True, exist_ok=True)
            predicted = predictor.boxes([s.image for s in samples])
            parts.append(f"<h2>{html.escape(name)}: sample predictions (white: true boxes)</h2><div>")
            for index, (sample, boxes) in enumerate(zip(samples, predicted)):
                with Image.open(sample.image) as im:
                    im = im.convert("RGB")
                    file = folder / f"{index:03d}_{sample.image.stem}.png"
                    draw_boxes(im, boxes, _truth(sample, im.size, dataset.names)).save(file)
                rel = file.relative_to(out).as_posix()
                parts.append(f'<figure style="display:inline-block;margin:4px"><img src="{html.escape(rel)}" '
                             f'style="max-width:320px"><figcaption>{html.escape(sample.image.name)}: '
                             f"{len(boxes)} predicted, {len(sample.lines)} true</figcaption></figure>")
            parts.append("</div>")
    parts.insert(2, "<h2>Summary</h2>" + html_table(summary, list(summary[0]) if summary else []))
    parts.append("</body></html>")
    metrics_path = atomic_write_json(out / "metrics.json", metrics)
    report_path = atomic_write_text(out / "report.html", "\n".join(parts))
    events.result("evaluate", metrics, f"report: {report_path}")
    return {"metrics": metrics, "metrics_path": metrics_path, "report_path": report_path, "output_dir": out}


# ---------------------------------------------------------------------------------------------
# export


def export(artifact: Path, output: Path, merged: bool = False, **kwargs) -> Path:
    """The detector as ONNX (`output`: a .onnx file): input `images` (N, 3, S, S, RGB in [0, 1],
    letterboxed), output (N, 4 + classes, anchors): cx cy w h in input pixels and class scores, before
    NMS; checked against PyTorch with onnxruntime."""
    from fakefinder.tasks.registry import read_model

    if merged:
        raise ConfigError("an object detector has no adapter to merge")
    art = read_model(artifact)
    predictor = BoxPredictor(art, "cpu")
    output = Path(output)
    if output.suffix != ".onnx":
        output = output / "model.onnx"
    output.parent.mkdir(parents=True, exist_ok=True)
    model = predictor.model.fuse(verbose=False) if hasattr(predictor.model, "fuse") else predictor.model
    model.eval()
    for module in model.modules():
        if hasattr(module, "export") and hasattr(module, "format"):
            module.export, module.format = True, "onnx"
    size = predictor.imgsz
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        expected = model(x)
        expected = expected[0] if isinstance(expected, (list, tuple)) else expected
        torch.onnx.export(model, (x,), str(output), input_names=["images"], output_names=["output"],
                          dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    import onnxruntime as ort

    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    error = float(np.abs(got - expected.numpy()).max())
    if error > 1e-3 * max(1.0, float(np.abs(expected.numpy()).max())):
        raise RuntimeError(f"{output}: ONNX output differs from PyTorch by {error:.3g}")
    (output.with_suffix(".json")).write_text(json.dumps({"classes": art.classes, "input_size": size,
                                                          "parity_max_abs_error": error}, indent=1))
    return output
