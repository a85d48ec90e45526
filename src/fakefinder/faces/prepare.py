"""`fakefinder prepare`: datasets in their published layouts -> face crops + one manifest.

Work is done per video (or image) and each finished item leaves an atomic record under
`<output>/.records/`, so a killed run resumes where it stopped, a rerun on finished output does
nothing, and `--shard i/n` jobs on many machines can share one output folder and be merged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fakefinder.config import Config, ConfigError, save_config
from fakefinder.core.errors import FakefinderError
from fakefinder.core.files import atomic_write, atomic_write_bytes, atomic_write_json, remove_partials
from fakefinder.core.runlock import RunFolderError, RunLock
from fakefinder.faces.layouts import MediaItem, read_datasets
from fakefinder.faces.splits import assign_splits, in_shard, parse_shard
from fakefinder.media.images import encode_image

log = logging.getLogger(__name__)

RECORDS_DIR = ".records"
MANIFEST_COLUMNS = [
    "dataset",
    "video_id",
    "group",
    "label",
    "method",
    "split",
    "frame_index",
    "face_index",
    "x1",
    "y1",
    "x2",
    "y2",
    "detector",
    "score",
    "path",
    "source_path",
    "source_video_id",
    "mask_path",
]
FAILURE_COLUMNS = ["dataset", "video_id", "label", "split", "source_path", "reason"]


class SetupError(FakefinderError, RuntimeError):
    """A problem with the environment (no detector loads) that would fail every video alike."""


@dataclass
class PrepareResult:
    output_dir: Path
    manifest_path: Path
    failures_path: Path
    summary_path: Path
    summary: dict[str, Any]
    processed: int  # items worked on in this call
    skipped: int  # items already done before this call


@dataclass
class _Task:
    item: MediaItem
    record_path: Path
    fingerprint: str
    reuse_boxes: dict[int, list[dict]] | None = None


@dataclass
class _Record:
    video_id: str
    status: str  # "ok" | "failed"
    split: str
    fingerprint: str
    reason: str = ""
    frames_sampled: int = 0
    frames_with_face: int = 0
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# the per-item work (runs in worker processes, see fakefinder.core.pool)

_worker_state: dict[str, Any] = {}


def _init_worker(config_json: str) -> None:
    from fakefinder.config import Config
    from fakefinder.faces.extract import ExtractSettings

    config = Config.model_validate_json(config_json)
    _worker_state.update(config=config, settings=ExtractSettings.from_config(config))


def crop_relpath(item: MediaItem, frame_index: int, face_index: int, ext: str) -> str:
    local = item.video_id.split(":", 1)[1]
    return f"{item.dataset}/{item.split}/{item.label}/{local}/{frame_index:06d}_{face_index}.{ext}"


def process_item(task: _Task, config: Config, settings=None) -> _Record:
    """Faces of one file (`fakefinder.faces.extract`) written as crops; any problem with this file
    becomes a failed record."""
    from fakefinder.faces.detectors import NoDetectorError
    from fakefinder.faces.extract import ExtractSettings, extract

    item = task.item
    started = time.perf_counter()
    try:
        found = extract(item.path, settings or ExtractSettings.from_config(config), task.reuse_boxes)
    except NoDetectorError as exc:
        raise SetupError(str(exc)) from exc
    record = _Record(
        item.video_id,
        "failed" if found.reason else "ok",
        item.split,
        task.fingerprint,
        found.reason,
        found.frames,
        found.frames_with_face,
    )
    output_dir = Path(config.prepare.output_dir)
    masks = _dataset_masks(item, found.crops, config)
    for n, crop in enumerate(found.crops):  # none for a failed item: its crops are not in the manifest
        rel = crop_relpath(item, crop.frame_index, crop.face.track, config.prepare.image_format)
        atomic_write_bytes(output_dir / rel, crop.data)
        row = crop.row()
        row["score"] = row.pop("face_score")
        if masks:
            row["mask_path"] = rel.rsplit(".", 1)[0] + "_mask.png"
            atomic_write_bytes(output_dir / row["mask_path"], encode_image(masks[n], "png"))
        record.rows.append({**row, "path": rel})
    record.seconds = round(time.perf_counter() - started, 3)
    atomic_write_json(task.record_path, asdict(record))
    return record


def _dataset_masks(item: MediaItem, crops: list, config: Config) -> list | None:
    """A fake's crops cut from its dataset's mask video (FF++ masks/), or None; a mask video that
    cannot be read costs the crops their masks, not the item."""
    from fakefinder.faces.extract import mask_crops

    if item.mask_path is None or not crops:
        return None
    try:
        return mask_crops(item.mask_path, crops, config.faces)
    except (ValueError, OSError) as exc:
        log.warning("%s: no masks for its crops (%s)", item.video_id, exc)
        return None


def _run_in_worker(task: _Task) -> _Record:
    return process_item(task, _worker_state["config"], _worker_state["settings"])


# ---------------------------------------------------------------------------------------------
# orchestration (main process)


def record_path(output_dir: Path, video_id: str) -> Path:
    digest = hashlib.sha1(video_id.encode()).hexdigest()
    return Path(output_dir) / RECORDS_DIR / digest[:2] / f"{digest}.json"


def settings_fingerprint(config: Config) -> str:
    """What changes the crops: a record made with other settings is redone."""
    faces = config.faces.model_dump(mode="json", exclude={"batch_size"})
    settings = {
        "faces": faces,
        "frames_per_video": config.data.frames_per_video,
        "frame_stride": config.data.frame_stride,
        "image_format": config.prepare.image_format,
        "jpeg_quality": config.prepare.jpeg_quality,
    }
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _load_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _is_done(record: dict | None, item: MediaItem, fingerprint: str, retry_failed: bool) -> bool:
    if record is None or record.get("fingerprint") != fingerprint or record.get("split") != item.split:
        return False
    return not (retry_failed and record.get("status") == "failed")


def _reuse_boxes(item: MediaItem, config: Config) -> dict[int, list[dict]] | None:
    if not (config.faces.reuse_real_boxes and config.faces.detect and item.source_video_id):
        return None
    source = _load_record(record_path(config.prepare.output_dir, item.source_video_id))
    if not source or source.get("status") != "ok":
        return None
    boxes: dict[int, list[dict]] = defaultdict(list)
    for row in source["rows"]:
        boxes[row["frame_index"]].append(
            {
                "box": row["box"],
                "score": row["score"],
                "detector": row["detector"],
                "track": row["face_index"],
            }
        )
    return dict(boxes)


def _execute(tasks: list[_Task], config: Config) -> Iterator[_Record]:
    from fakefinder.core.pool import process_map

    workers = config.prepare.num_workers
    threads = config.prepare.torch_threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    yield from process_map(
        _run_in_worker,
        tasks,
        workers,
        _init_worker,
        (config.model_dump_json(),),
        ordered=False,
        threads=threads,
    )


def prepare(
    config: Config,
    shard: str | tuple[int, int] | None = None,
    merge_only: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    events=None,
) -> PrepareResult:
    """Prepare every dataset of `config`: crops, manifest, failures table and summary.

    `shard=(i, n)` (or "i/n") processes only the i-th of n disjoint parts and writes a shard
    manifest; `merge_only=True` processes nothing and writes the full manifest from the records
    all shards left in the shared output folder. Reports through `events` (see
    `fakefinder.core.events`): a `prepare` stage with a step per finished file (`progress=False`:
    none), warnings, and the summary as the result.
    """
    from fakefinder.core.events import as_events

    events = as_events(events)
    if not config.data.datasets:
        raise ConfigError("data.datasets is empty: name at least one dataset to prepare")
    shard_spec = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    output_dir = Path(config.prepare.output_dir)
    with _prepare_lock(output_dir, None if merge_only else shard_spec) as lock:
        if lock.note:
            events.warning(lock.note, "prepare")
        return _prepare_locked(config, events, shard_spec, merge_only, retry_failed, progress)


def _prepare_lock(output_dir: Path, shard: tuple[int, int] | None) -> RunLock:
    """The whole run (or a merge) locks `prepare`; shard i of n locks its own name, so shards on
    many machines share one folder, but never with a whole run, and never twice the same shard."""
    if shard is None:
        lock = RunLock(output_dir, "prepare", "fakefinder prepare").acquire()
        try:
            for other in sorted(output_dir.glob(".prepare-shard-*.lock")):
                RunLock(output_dir, other.name[1:-5]).acquire().release()  # refused while that shard runs
        except BaseException:
            lock.release()
            raise
        return lock
    lock = RunLock(
        output_dir,
        f"prepare-shard-{shard[0]}-of-{shard[1]}",
        f"fakefinder prepare --shard {shard[0]}/{shard[1]}",
    ).acquire()
    try:  # then (never before: a whole run starting meanwhile would miss this shard's lock) no whole run
        _check_no_whole_run(output_dir)
    except BaseException:
        lock.release()
        raise
    return lock


_SHARD_CHECK = "a prepare shard's check for a whole run"


def _check_no_whole_run(output_dir: Path, tries: int = 100) -> None:
    """Refused while a whole run holds the folder; shards checking at the same moment (their
    brief hold of the lock is what they check, and its owner may not be written yet) try again."""
    for attempt in range(tries):
        try:
            RunLock(output_dir, "prepare", _SHARD_CHECK).acquire().release()
            return
        except RunFolderError as exc:
            if "fakefinder prepare (" in str(exc) or attempt == tries - 1:  # a whole run holds it
                raise
            time.sleep(0.01 + 0.04 * random.random())


def _prepare_locked(
    config: Config, events, shard_spec, merge_only: bool, retry_failed: bool, progress: bool
) -> PrepareResult:
    output_dir = Path(config.prepare.output_dir)

    items = read_datasets(config.data.datasets)
    known_failures = [(item, item.problem) for item in items if item.problem]
    items = [item for item in items if not item.problem]
    dropped = assign_splits(items, config.data.split)
    for item, _ in known_failures:
        item.split = "none"
    for warning in _split_warnings(items):
        events.warning(warning, "prepare")
    save_config(config, output_dir / "config.yaml")
    if shard_spec is None or merge_only:  # shards share the folder: another shard's writes may be in flight
        remove_partials(output_dir)

    if config.faces.detect and not merge_only:
        _check_detectors(config, events)
    fingerprint = settings_fingerprint(config)
    mine = [item for item in items if in_shard(item.video_id, shard_spec)]
    todo = (
        []
        if merge_only
        else [
            item
            for item in mine
            if not _is_done(
                _load_record(record_path(output_dir, item.video_id)), item, fingerprint, retry_failed
            )
        ]
    )
    skipped = len(mine) - len(todo) if not merge_only else 0

    # reals first, so fakes can reuse their boxes when asked
    phases = [todo]
    if config.faces.reuse_real_boxes:
        phases = [[i for i in todo if not i.source_video_id], [i for i in todo if i.source_video_id]]
    processed = 0
    stage = events.stage("prepare", total=len(todo)) if progress and todo else None
    try:
        failed = 0
        for phase in phases:
            tasks = [
                _Task(item, record_path(output_dir, item.video_id), fingerprint, _reuse_boxes(item, config))
                for item in phase
            ]
            for record in _execute(tasks, config):
                processed += 1
                failed += record.status == "failed"
                if stage is not None:
                    stage.advance(status=f"{failed} failed" if failed else "")
    finally:
        if stage is not None:
            events.end(stage)

    whole = merge_only or shard_spec is None
    scope = items if whole else mine
    early = [(i, r) for i, r in known_failures + dropped if whole or in_shard(i.video_id, shard_spec)]
    suffix = "" if whole else f".shard-{shard_spec[0]}-of-{shard_spec[1]}"
    result = _write_outputs(config, scope, early, fingerprint, suffix)
    result.processed, result.skipped = processed, skipped
    s = result.summary
    events.result(
        "prepare",
        s,
        f"items: {s['items_listed']} listed, {s['items_ok']} prepared, {s['items_failed']} failed, "
        f"{s['items_pending']} pending | frames: {s['frames_sampled']} sampled, faces found in "
        f"{s['faces_found_pct']}% | crops: {s['crops']}\nmanifest: {s['manifest']}"
        + (f"\nfailures: {s['failures']}" if s["items_failed"] else ""),
    )
    return result


def _split_warnings(items: list[MediaItem]) -> list[str]:
    """Identity links can chain a dataset into one huge group that no ratio split can divide."""
    warnings = []
    by_dataset: dict[str, Counter] = defaultdict(Counter)
    for item in items:
        by_dataset[item.dataset][item.group] += 1
    for dataset, groups in by_dataset.items():
        total = sum(groups.values())
        group, size = groups.most_common(1)[0]
        if total >= 10 and size / total > 0.3:
            warnings.append(
                f"dataset {dataset}: identity group {group} holds {size} of {total} items "
                f"({100 * size / total:.0f}%); the split ratios cannot be met"
            )
    return warnings


def _check_detectors(config: Config, events) -> None:
    from fakefinder.faces.detectors import DetectorChain

    try:
        warnings = DetectorChain(config.faces).verify()
    except (RuntimeError, ValueError) as exc:
        raise SetupError(str(exc)) from exc
    for warning in warnings:
        events.warning(warning, "prepare")


def _write_outputs(config, scope, early_failures, fingerprint, suffix) -> PrepareResult:
    import pandas as pd

    output_dir = Path(config.prepare.output_dir)
    rows, failures = [], []
    stats = Counter()
    per_label_split: dict[str, Counter] = defaultdict(Counter)
    pending = 0
    for item, reason in early_failures:
        failures.append(_failure_row(item, reason))
    for item in scope:
        record = _load_record(record_path(output_dir, item.video_id))
        if record is None or record.get("fingerprint") != fingerprint or record.get("split") != item.split:
            pending += 1
            continue
        stats["frames_sampled"] += record["frames_sampled"]
        stats["frames_with_face"] += record["frames_with_face"]
        if record["status"] != "ok":
            failures.append(_failure_row(item, record["reason"]))
            continue
        stats["items_ok"] += 1
        per_label_split[item.split][item.label] += len(record["rows"])
        per_label_split[item.split][f"{item.label}_videos"] += 1
        for row in record["rows"]:
            x1, y1, x2, y2 = row["box"]
            rows.append(
                {
                    "dataset": item.dataset,
                    "video_id": item.video_id,
                    "group": item.group,
                    "label": item.label,
                    "method": item.method,
                    "split": item.split,
                    "frame_index": row["frame_index"],
                    "face_index": row["face_index"],
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "detector": row["detector"],
                    "score": row["score"],
                    "path": row["path"],
                    "source_path": str(item.path),
                    "source_video_id": item.source_video_id or "",
                    "mask_path": row.get("mask_path", ""),
                }
            )
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    name = config.prepare.manifest_name
    stem, ext = name.rsplit(".", 1)
    manifest_path = output_dir / f"{stem}{suffix}.{ext}"
    if ext == "parquet":
        atomic_write(manifest_path, lambda h: manifest.to_parquet(h, index=False))
    else:
        atomic_write(manifest_path, lambda h: manifest.to_csv(h, index=False))
    failures_path = output_dir / f"failures{suffix}.csv"
    failures_frame = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    atomic_write(failures_path, lambda h: failures_frame.to_csv(h, index=False))

    reasons = Counter(_reason_kind(f["reason"]) for f in failures)
    summary = {
        "items_listed": len(scope) + len(early_failures),
        "items_ok": stats["items_ok"],
        "items_failed": len(failures),
        "items_pending": pending,
        "frames_sampled": stats["frames_sampled"],
        "frames_with_face": stats["frames_with_face"],
        "faces_found_pct": round(100 * stats["frames_with_face"] / stats["frames_sampled"], 2)
        if stats["frames_sampled"]
        else 0.0,
        "crops": len(manifest),
        "crops_by_split_label": {s: dict(c) for s, c in sorted(per_label_split.items())},
        "failures_by_reason": dict(reasons.most_common()),
        "datasets": sorted({item.dataset for item in scope}),
        "manifest": str(manifest_path),
        "failures": str(failures_path),
    }
    summary_path = atomic_write_json(output_dir / f"summary{suffix}.json", summary)
    return PrepareResult(output_dir, manifest_path, failures_path, summary_path, summary, 0, 0)


def _failure_row(item: MediaItem, reason: str) -> dict:
    return {
        "dataset": item.dataset,
        "video_id": item.video_id,
        "label": item.label,
        "split": item.split,
        "source_path": str(item.path),
        "reason": reason,
    }


def _reason_kind(reason: str) -> str:
    """Collapse reasons that differ only in numbers or names into one counter."""
    for marker in (
        "no face found",
        "dropped by the split guard",
        "no entry with a label",
        "listed in",
        "empty file",
        "unreadable image",
        "cannot open",
        "no decodable frames",
        "decoding failed",
        "no video stream",
    ):
        if marker in reason:
            return marker
    return reason.split(":", 1)[0][:60]
