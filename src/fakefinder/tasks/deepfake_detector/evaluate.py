"""`fakefinder evaluate` for deepfake detectors: frame- and video-level metrics for one or more models on one
or more
evaluation sets, per manipulation method and dataset, under perturbations; files and a report.

Thresholds are never tuned on the data being reported: they come from the model artifact (fitted on
validation during training) unless `evaluate.threshold` fixes one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fakefinder.config import Config, ConfigError
from fakefinder.core.files import atomic_write, atomic_write_json
from fakefinder.core.results import EvalSummary
from fakefinder.engine.aggregate import aggregate_videos
from fakefinder.engine.metrics import binary_metrics
from fakefinder.engine.report import model_name
from fakefinder.faces.manifest import read_manifest, select_rows
from fakefinder.tasks.deepfake_detector.artifact import KIND
from fakefinder.tasks.deepfake_detector.perturb import PERTURBATIONS

SUMMARY_KEYS = ("n", "auc", "macro_f1", "accuracy", "eer", "ap", "log_loss")


@dataclass
class EvalSet:
    name: str
    rows: pd.DataFrame | None  # prepared crops (manifest rows) ...
    root: Path | None
    items: list | None = None  # ... or raw files (`evaluate.sets.*.raw`), scored as predict scores them


def _default_manifest(config: Config) -> Path:
    return Path(config.train.manifest or Path(config.prepare.output_dir) / config.prepare.manifest_name)


def resolve_sets(config: Config) -> list[EvalSet]:
    ev = config.evaluate
    sets = []
    if ev.sets:
        for spec in ev.sets:
            if spec.raw is not None:
                sets.append(_raw_set(spec))
                continue
            manifest = read_manifest(spec.manifest or _default_manifest(config))
            rows = select_rows(manifest, spec.split, spec.datasets)
            sets.append(EvalSet(spec.name, rows, Path(manifest.attrs["root"])))
    else:
        manifest = read_manifest(_default_manifest(config))
        rows = select_rows(manifest, "test", None)
        datasets = sorted(set(rows.dataset))
        if len(datasets) > 1:
            sets = [
                EvalSet(d, rows[rows.dataset == d].reset_index(drop=True), Path(manifest.attrs["root"]))
                for d in datasets
            ]
        else:
            sets = [EvalSet(datasets[0] if datasets else "test", rows, Path(manifest.attrs["root"]))]
    for s in sets:
        if s.items is not None:
            continue
        if len(s.rows) == 0:
            raise ConfigError(f"evaluation set '{s.name}' has no rows")
        if ev.max_samples and len(s.rows) > ev.max_samples:
            s.rows = s.rows.sample(n=ev.max_samples, random_state=0).reset_index(drop=True)
        if "video_id" not in s.rows.columns:
            s.rows = s.rows.assign(video_id=s.rows.path)
        if "method" not in s.rows.columns:
            s.rows = s.rows.assign(method=s.rows.label)
    return sets


def _summary(metrics: dict) -> dict:
    return {k: metrics[k] for k in SUMMARY_KEYS}


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return (frame.label == "fake").astype(int).to_numpy()


def per_group_metrics(frame: pd.DataFrame, column: str, threshold: float) -> dict:
    """Per manipulation method: that method's fakes against all reals (as in FF++ reports);
    per dataset: the dataset's own rows."""
    out = {}
    if column == "method":
        reals = frame[frame.label == "real"]
        for method in sorted(set(frame[frame.label == "fake"].method)):
            part = pd.concat([reals, frame[(frame.label == "fake") & (frame.method == method)]])
            out[method] = _summary(binary_metrics(_labels(part), part.score, threshold))
        if len(reals):
            real_metrics = binary_metrics(_labels(reals), reals.score, threshold)
            out["real"] = {"n": real_metrics["n"], "accuracy": real_metrics["accuracy"]}
    else:
        for value in sorted(set(frame[column])):
            part = frame[frame[column] == value]
            out[str(value)] = _summary(binary_metrics(_labels(part), part.score, threshold))
    return out


def _raw_set(spec) -> EvalSet:
    from fakefinder.faces.layouts import read_dataset

    items = [item for item in read_dataset(spec.raw) if not item.problem]
    if any(item.official_split for item in items):
        items = [item for item in items if item.official_split == spec.split]
    if not items:
        raise ConfigError(
            f"evaluation set '{spec.name}': no files in {spec.raw.root} ({spec.raw.layout} layout)"
        )
    return EvalSet(spec.name, None, None, items)


def _raw_frames(detector, items: list, config: Config, device, events) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each file through predict's path (the one extraction, the model's face settings): one row per
    frame (its most suspicious face), and the files without a usable face (scored
    `predict.no_face_score`, as predict scores them)."""
    from fakefinder.engine.predict import extractions, face_settings
    from fakefinder.faces.extract import ExtractSettings
    from fakefinder.tasks.classification.scoring import score_pixels

    faces, notes = face_settings(detector.preprocessing, config.predict.faces)
    for note in notes:
        events.warning(note, "evaluate")
    settings = ExtractSettings.from_preprocessing(
        detector.preprocessing, faces, config.predict.frames_per_video
    )
    frames, faceless = [], []
    for item, found in zip(
        items, extractions([i.path for i in items], settings, config.evaluate.num_workers)
    ):
        base = {
            "source_path": str(item.path),
            "video_id": item.video_id,
            "dataset": item.dataset,
            "method": item.method,
            "label": item.label,
        }
        if not found.crops:
            faceless.append(
                {**base, "score": config.predict.no_face_score, "frames": 0, "reason": found.reason}
            )
            continue
        scores = score_pixels(detector, [c.pixels for c in found.crops], config.evaluate.batch_size, device)
        per_frame = pd.Series(scores).groupby([c.frame_index for c in found.crops]).max()
        frames += [{**base, "frame_index": int(i), "score": float(s)} for i, s in per_frame.items()]
    return pd.DataFrame(frames), pd.DataFrame(faceless)


def _levels(
    frames: pd.DataFrame, threshold: float, config: Config, faceless: pd.DataFrame | None = None
) -> tuple[dict, pd.DataFrame]:
    videos = aggregate_videos(frames, config.evaluate.aggregation, config.evaluate.top_k)
    if faceless is not None and len(faceless):  # files with no usable face count at video level
        videos = pd.concat(
            [videos, faceless[[c for c in videos.columns if c in faceless.columns]]], ignore_index=True
        )
    result = {
        "frame": binary_metrics(_labels(frames), frames.score, threshold),
        "video": binary_metrics(_labels(videos), videos.score, threshold),
    }
    for level, table in (("frame", frames), ("video", videos)):
        if "method" in table.columns and table.method.nunique() > 2:
            result[level]["per_method"] = per_group_metrics(table, "method", threshold)
        if "dataset" in table.columns and table.dataset.nunique() > 1:
            result[level]["per_dataset"] = per_group_metrics(table, "dataset", threshold)
    return result, videos


def evaluate(config: Config, models: list[Path], events=None) -> EvalSummary:
    """Deepfake detectors (artifacts, or older best.pt files) on the evaluation sets of `config`."""
    from fakefinder.core.devices import pick_device
    from fakefinder.core.events import as_events
    from fakefinder.core.process import flush_denormal
    from fakefinder.tasks.classification.scoring import load_detector
    from fakefinder.tasks.deepfake_detector.report import write_plots, write_report

    events = as_events(events)
    ev = config.evaluate
    sets = resolve_sets(config)
    device = pick_device(ev.device)
    out = Path(ev.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with flush_denormal():
        detectors = [(model_name(path), load_detector(path, device)) for path in models]
        metrics, curves, frame_tables, video_tables = _score_sets(config, detectors, sets, device, events)

    predictions = pd.concat(frame_tables, ignore_index=True)
    columns = (
        "model",
        "set",
        "path",
        "source_path",
        "frame_index",
        "video_id",
        "dataset",
        "method",
        "label",
        "score",
        "prediction",
    )
    predictions = predictions[[c for c in columns if c in predictions.columns]]
    video_predictions = pd.concat(video_tables, ignore_index=True)
    predictions_path = atomic_write(out / "predictions.csv", lambda h: predictions.to_csv(h, index=False))
    video_path = atomic_write(
        out / "video_predictions.csv", lambda h: video_predictions.to_csv(h, index=False)
    )
    metrics["tables"] = comparison_tables(metrics)
    metrics_path = atomic_write_json(out / "metrics.json", _jsonable(metrics))
    plots = write_plots(out / "plots", curves, metrics)
    report_path = write_report(out / "report.html", metrics, plots, config)
    events.result("evaluate", _jsonable(metrics), f"report: {report_path}")
    return EvalSummary(
        KIND,
        out,
        metrics,
        metrics_path,
        report_path,
        {"predictions": predictions_path, "video_predictions": video_path},
        metrics["tables"],
    )


def _score_sets(config: Config, detectors: list, sets: list[EvalSet], device, events):
    from fakefinder.tasks.classification.scoring import score_crops

    ev = config.evaluate
    metrics: dict = {"kind": KIND, "aggregation": ev.aggregation, "top_k": ev.top_k, "models": {}}
    frame_tables, video_tables, curves = [], [], {}
    for name, detector in detectors:
        threshold = ev.threshold if ev.threshold is not None else detector.threshold
        source = "evaluate.threshold" if ev.threshold is not None else "fitted on validation (model artifact)"
        events.log(f"{name}: threshold {threshold:.4f} ({source})", "evaluate")
        entry = {"path": str(detector.path), "threshold": threshold, "threshold_source": source, "sets": {}}
        for eval_set in sets:
            if eval_set.items is not None:
                frames, faceless = _raw_frames(detector, eval_set.items, config, device, events)
                if frames.empty:
                    raise ConfigError(f"evaluation set '{eval_set.name}': no face found in any file")
                levels, videos = _levels(frames, threshold, config, faceless)
                levels["faceless_files"] = len(faceless)
            else:
                frames = eval_set.rows.copy()
                frames["score"] = score_crops(
                    detector, frames, eval_set.root, ev.batch_size, ev.num_workers, device
                )
                levels, videos = _levels(frames, threshold, config)
                if ev.heatmaps:
                    levels["heatmaps"] = heatmap_evidence(detector, name, eval_set, frames, threshold, config)
            if ev.perturbations and eval_set.items is not None:
                events.warning(
                    f"evaluate.perturbations apply to prepared crops; set '{eval_set.name}' is raw files",
                    "evaluate",
                )
            elif ev.perturbations:
                levels["perturbations"] = {
                    "none": {"frame": _summary(levels["frame"]), "video": _summary(levels["video"])}
                }
                for perturbation in ev.perturbations:
                    damaged = eval_set.rows.copy()
                    damaged["score"] = score_crops(
                        detector,
                        damaged,
                        eval_set.root,
                        ev.batch_size,
                        ev.num_workers,
                        device,
                        perturb=PERTURBATIONS[perturbation],
                    )
                    p_levels, _ = _levels(damaged, threshold, config)
                    levels["perturbations"][perturbation] = {
                        "frame": _summary(p_levels["frame"]),
                        "video": _summary(p_levels["video"]),
                    }
            entry["sets"][eval_set.name] = levels
            for table, level_frame in ((frame_tables, frames), (video_tables, videos)):
                table.append(
                    level_frame.assign(
                        model=name,
                        set=eval_set.name,
                        prediction=np.where(level_frame.score >= threshold, "fake", "real"),
                    )
                )
            curves[(name, eval_set.name)] = (frames, videos, threshold, levels)
        metrics["models"][name] = entry
    return metrics, curves, frame_tables, video_tables


def heatmap_evidence(detector, name: str, eval_set: EvalSet, frames: pd.DataFrame, threshold, config) -> dict:
    """The detector's heatmaps on one set of prepared crops: localisation and deletion figures on the
    fakes with a true mask, beside the face prior and a random map, by mask area; and the gallery."""
    from fakefinder.tasks.classification.heatmaps import read_record
    from fakefinder.tasks.deepfake_detector.localiser import FRACTIONS, clean, measure, summarise

    ev = config.evaluate
    record = read_record(detector.path)
    iou_threshold = record["iou_threshold"] if record else 0.5
    table, left_out = measure(
        detector, eval_set.rows, eval_set.root, None, ev.heatmap_samples, (iou_threshold,)
    )
    folder = Path(ev.output_dir) / "gallery" / heatmap_folder_name(name, eval_set.name)
    return clean(
        {
            "method": record["method"] if record else None,
            "experimental": not (record and record.get("beats_prior")),
            "validation": record.get("validation") if record else None,
            "iou_threshold": iou_threshold,
            "iou_threshold_source": "fitted on validation"
            if record
            else "default (not checked on validation)",
            "removal": "the source crop's pixels (where a fake has a source), else the crop's mean colour",
            "fractions": list(FRACTIONS),
            "left_out": left_out,
            **summarise(table),
            "gallery": write_gallery(detector, eval_set, frames, threshold, folder, ev.gallery_size),
        }
    )


def heatmap_folder_name(model: str, set_name: str) -> str:
    from fakefinder.engine.evidence import heatmap_name

    return heatmap_name(f"{model}__{set_name}")


def write_gallery(
    detector, eval_set: EvalSet, frames: pd.DataFrame, threshold, folder: Path, size: int
) -> list:
    """Heatmaps, overlays and regions of the most confident fakes and reals and the most confident
    mistakes (`fakefinder.engine.evidence.gallery_rows`), written under `folder`."""
    from fakefinder.engine.evidence import gallery_rows, heatmap_name, regions_of, save_heatmap
    from fakefinder.media.images import load_rgb
    from fakefinder.tasks.classification.scoring import crop_heatmaps

    side = detector.info["image_size"]
    entries = []
    for group, rows in gallery_rows(frames, threshold, size).items():
        crops = [load_rgb(Path(eval_set.root) / frames.path.iloc[r], side) for r in rows]
        for r, crop, heatmap in zip(rows, crops, crop_heatmaps(detector, crops) if crops else []):
            name = heatmap_name(f"{group}_{len(entries)}_{Path(str(frames.path.iloc[r])).stem}")
            png, jpg = save_heatmap(folder, name, heatmap, crop)
            regions, source = regions_of(crop, heatmap)
            entries.append(
                {
                    "group": group,
                    "path": str(frames.path.iloc[r]),
                    "label": str(frames.label.iloc[r]),
                    "score": float(frames.score.iloc[r]),
                    "heatmap": png.relative_to(folder.parent.parent).as_posix(),
                    "overlay": jpg.relative_to(folder.parent.parent).as_posix(),
                    "regions": regions,
                    "regions_from": source,
                }
            )
    return entries


def comparison_tables(metrics: dict) -> dict:
    """model x set tables of the headline figures (a cross-dataset / model comparison)."""
    rows = []
    for name, entry in metrics["models"].items():
        for set_name, levels in entry["sets"].items():
            for level in ("frame", "video"):
                m = levels[level]
                rows.append(
                    {
                        "model": name,
                        "set": set_name,
                        "level": level,
                        "n": m["n"],
                        "auc": m["auc"],
                        "macro_f1": m["macro_f1"],
                        "accuracy": m["accuracy"],
                        "eer": m["eer"],
                        "ap": m["ap"],
                    }
                )
    return {"summary": rows}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
