"""Training a YOLO detector with Ultralytics on a checked YOLO dataset: arguments from the config,
progress and per-epoch metrics as events, a graceful stop on SIGTERM / Ctrl-C, resume from the last
complete checkpoint (also after a kill), the artifact (safetensors + model.json) of the best epoch."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from fakefinder.config import Config, ConfigError
from fakefinder.core.results import TrainSummary
from fakefinder.engine.run import Run
from fakefinder.engine.tiny import is_random

KIND = "object_detector"
RUN_FILES = ("checkpoints", "model")  # what shows that an output folder holds a run


AUGMENT_KEYS = {
    "hsv_h",
    "hsv_s",
    "hsv_v",
    "degrees",
    "translate",
    "scale",
    "shear",
    "perspective",
    "flipud",
    "fliplr",
    "bgr",
    "mosaic",
    "mixup",
    "cutmix",
    "copy_paste",
    "copy_paste_mode",
    "erasing",
    "box",
    "cls",
    "dfl",
    "warmup_momentum",
    "warmup_bias_lr",
    "dropout",
    "multi_scale",
    "rect",
    "max_det",
    "freeze",
}


def _arguments(config: Config, output: Path, device, precision: str) -> dict:
    """Ultralytics' training arguments: the run section's, the device and precision the run block
    resolved, the augmentation settings checked against Ultralytics' own list."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from fakefinder.tasks.object_detector.model import TINY_LAYOUT, yolo_device

    t = config.object_detector.train
    arch = config.object_detector.model.arch
    device = yolo_device(device)
    args = {
        "model": TINY_LAYOUT if is_random(arch) else arch,
        "data": str(output / "dataset" / "data.yaml"),
        "task": "detect",
        "mode": "train",
        "epochs": t.epochs,
        "imgsz": t.imgsz,
        "batch": t.batch_size,
        "nbs": t.nbs,
        "optimizer": t.optimizer,
        "lr0": t.lr,
        "lrf": t.lrf,
        "momentum": t.momentum,
        "weight_decay": t.weight_decay,
        "warmup_epochs": t.warmup_epochs,
        "cos_lr": t.cos_lr,
        "patience": t.patience,
        "close_mosaic": t.close_mosaic,
        "amp": {"fp32": False, "fp16": True, "bf16": "bf16"}[precision],
        "workers": t.num_workers,
        "cache": t.cache,
        "seed": t.seed,
        "deterministic": t.deterministic,
        "device": device,
        "project": str(Path(output).resolve()),  # a relative one would go under Ultralytics' own runs_dir
        "name": "ultralytics",
        "exist_ok": True,
        "pretrained": False,
        "plots": False,
        "save": True,
        "val": True,
        "verbose": False,
        "save_period": -1,
    }
    for key, value in t.augment.items():
        if key not in AUGMENT_KEYS:
            import difflib

            close = difflib.get_close_matches(key, sorted(AUGMENT_KEYS), n=1)
            raise ConfigError(
                f"object_detector.train.augment.{key}: not an augmentation or loss setting fakefinder passes "
                f"to Ultralytics{f' (did you mean {close[0]!r}?)' if close else ''}; known: "
                f"{', '.join(sorted(AUGMENT_KEYS))}"
            )
        if key not in DEFAULT_CFG_DICT:
            raise ConfigError(
                f"object_detector.train.augment.{key}: this Ultralytics version has no such argument"
            )
        args[key] = value
    return args


def train(config: Config, resume: bool | str = False, events=None, overwrite: bool = False) -> TrainSummary:
    """Train as configured inside the run block (`engine.run`: the folder's lock, a finished run
    refused unless resumed or `overwrite`, seeds, signals, device and precision, trackers)."""
    from fakefinder.tasks.object_detector.model import require
    from fakefinder.tasks.registry import get_task

    require()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or "," in str(config.object_detector.train.device):
        raise ConfigError(
            "object_detector trains on one GPU or the CPU (several GPUs would need Ultralytics to re-import "
            "fakefinder's trainer in each of its processes: not supported yet); launch without torchrun"
        )
    with Run(
        get_task(config.task),
        config,
        (*RUN_FILES, "ultralytics"),
        "an object detector run",
        resume,
        overwrite,
        events,
    ) as run:
        return _train(config, run)


def _train(config: Config, run) -> TrainSummary:
    from fakefinder.tasks.object_detector import model as yolo
    from fakefinder.tasks.object_detector.data import checked_dataset, data_dict, stage

    cfg = config.object_detector
    events, output = run.events, run.folder
    output.mkdir(parents=True, exist_ok=True)
    dataset = checked_dataset(config, events, report_to=output / "label_report.json")  # train and val only
    spec = yolo.model_yaml(cfg.model.arch)
    folder = run.checkpoint(yolo.latest)
    checkpoint = yolo.read_checkpoint(folder) if folder is not None else None
    if checkpoint is not None:
        events.log(
            f"epoch {checkpoint['state']['epoch'] + 1} of {checkpoint['state']['epochs']} done", "train"
        )
    start = yolo.start_weights(cfg.model.weights) if cfg.model.weights and checkpoint is None else None
    args = _arguments(config, output, run.device, run.precision)
    run.start()  # only now: a dataset or model that fails its check never costs the old run
    data = data_dict(stage(dataset, output / "dataset"))
    started = time.perf_counter()
    done_before = checkpoint["state"]["epoch"] + 1 if checkpoint else 0
    finished = bool(checkpoint and checkpoint["state"].get("finished"))  # its last epoch, or early stopping
    history: list[dict] = []
    if done_before < cfg.train.epochs and not finished:
        trainer = yolo.trainer_class(spec, data, output, start, checkpoint, events, run.stop)(overrides=args)
        yolo.integration_callbacks(trainer)
        _report_through_events(trainer, events, run.stop, history)
        trainer.train()
        if trainer.interrupted:
            events.log(
                f"stopped in epoch {trainer.epoch + 1}: resume (--resume) continues from the last complete "
                f"epoch's checkpoint ({output / yolo.CHECKPOINT / 'last'})",
                "train",
            )
            return TrainSummary(
                KIND,
                output,
                None,
                "interrupted",
                steps=trainer.epoch,
                epochs=float(trainer.epoch),
                seconds=time.perf_counter() - started,
                history=history,
            )
    else:
        events.log(
            f"{output}: training finished at epoch {done_before}; writing the model from its best weights",
            "train",
        )
    seconds = time.perf_counter() - started
    best = output / yolo.CHECKPOINT / "best.safetensors"
    if not best.is_file():
        raise ConfigError(f"{output}: training left no best weights ({best})")
    from safetensors.torch import load_file

    model = yolo.build(spec, dataset.names)
    model.load_state_dict(load_file(str(best)))
    best_info = json.loads((output / yolo.CHECKPOINT / "best.json").read_text())
    from fakefinder.tasks.object_detector.evaluate import validate

    val = validate(
        model,
        data,
        cfg.train.imgsz,
        cfg.train.batch_size,
        cfg.eval.conf,
        cfg.eval.iou,
        "val",
        yolo.yolo_device(run.device),
        output / "val",
    )
    model_dir = save_artifact(
        model,
        spec,
        dataset.names,
        config,
        {
            "epochs_run": len(_results(output)),
            "best_epoch": best_info["epoch"],
            "selected_on": {"metric": "fitness (val mAP@0.5:0.95)", "value": best_info["fitness"]},
            "validation": val["overall"],
            "per_class": val["per_class"],
            "data": dataset.report()["splits"],
            "config": config.model_dump(mode="json"),
        },
    )
    events.result(
        "train",
        {"output": str(output), "model": str(model_dir), "val": val, "seconds": seconds},
        f"trained to epoch {best_info['epoch']} (best) in {seconds:.0f} s; val mAP@0.5 "
        f"{val['overall']['map50']:.4f}, mAP@0.5:0.95 {val['overall']['map50_95']:.4f}; model: {model_dir}",
    )
    rows = _results(output)
    return TrainSummary(
        KIND,
        output,
        Path(model_dir),
        "completed",
        "fitness",
        best_info["fitness"],
        best_info["epoch"],
        float(len(rows)),
        0,
        seconds,
        rows,
        {"val": val, "data": dataset.report()},
    )


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
        running["stage"] = events.stage(
            "detector train", total=tr.epochs * batches, step=tr.start_epoch * batches
        )
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
        values = {
            **{k: float(v) for k, v in tr.label_loss_items(tr.tloss).items()},
            **{k: float(v) for k, v in (tr.metrics or {}).items()},
            **{k: float(v) for k, v in tr.lr.items()},
        }
        history.append({"epoch": tr.epoch + 1, **values})
        batches = running.get("batches") or 0
        events.metrics(
            "val",
            values,
            f"epoch {tr.epoch + 1}/{tr.epochs}: mAP@0.5 {values.get('metrics/mAP50(B)', float('nan')):.4f}, "
            f"mAP@0.5:0.95 {values.get('metrics/mAP50-95(B)', float('nan')):.4f}",
            step=(tr.epoch + 1) * batches,
            total=tr.epochs * batches,
            epoch=tr.epoch + 1,
            epochs=tr.epochs,
        )

    def on_train_end(tr):
        if running.get("stage") is not None:
            events.end(running["stage"])

    trainer.add_callback("on_train_start", on_train_start)
    trainer.add_callback("on_train_batch_end", on_train_batch_end)
    trainer.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    trainer.add_callback("on_train_end", on_train_end)


def save_artifact(
    model, spec: dict, names: list[str], config: Config, training: dict, folder: Path | None = None
):
    from fakefinder.core.artifact import write_artifact
    from fakefinder.tasks.object_detector.model import _state_dict, version

    cfg = config.object_detector
    folder = Path(folder or Path(cfg.train.output_dir) / "model")
    architecture = {
        "backend": "ultralytics",
        "ultralytics": version(),
        "arch": cfg.model.arch,
        "yaml": json.loads(json.dumps(model.yaml, default=str)),
    }
    preprocessing = {
        "input_size": cfg.train.imgsz,
        "letterbox": True,
        "conf": cfg.predict.conf,
        "iou": cfg.predict.iou,
        "max_det": cfg.predict.max_det,
        "crop": {"format": "none"},
    }
    return write_artifact(
        folder, KIND, architecture, names, preprocessing, _state_dict(model), None, training
    ).path


# ---------------------------------------------------------------------------------------------
# evaluation
