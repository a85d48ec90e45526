"""`fakefinder predict`: images and videos -> a submission CSV (+ per-frame details).

Each file is decoded and its faces are found with the settings the model artifact records (as
in training, `predict.faces` overrides them); the kind's predictor scores the crops (a deepfake
detector or a weighted ensemble of them, DX-LLaVA with explanations) and frame scores are aggregated
per file. A file without a usable face gets `predict.no_face_score` and a reason,
never a crash. Output order is deterministic (sorted ids).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from fakefinder.config import Config, ConfigError, FacesConfig
from fakefinder.core.files import atomic_write, atomic_write_text
from fakefinder.core.process import flush_denormal
from fakefinder.core.results import Predictor, PredictResult
from fakefinder.media.images import MEDIA_EXTENSIONS


def list_inputs(paths: list[Path]) -> list[Path]:
    """Expand folders (any depth) and list files (.txt: a path per line; .csv: a `path`/`file`
    column or the first one), keeping only images and videos. Fails fast on a missing input."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS
            )
        elif path.suffix.lower() in {".txt", ".csv", ".lst"} and path.is_file():
            files += _read_list(path)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"predict input not found: {path}")
    if not files:
        raise ConfigError(f"no images or videos found in {', '.join(map(str, paths))}")
    return files


def _read_list(path: Path) -> list[Path]:
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path)
        column = next((c for c in ("path", "file", "filename") if c in frame.columns), frame.columns[0])
        entries = [str(v) for v in frame[column]]
    else:
        entries = [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    return [(path.parent / e) if not Path(e).is_absolute() else Path(e) for e in entries]


def file_ids(files: list[Path]) -> list[str]:
    """The file name (as competitions expect), or the path relative to the common folder when two
    files share a name."""
    names = [f.name for f in files]
    if len(set(names)) == len(names):
        return names
    common = Path(os.path.commonpath([str(f.resolve()) for f in files]))
    return [f.resolve().relative_to(common).as_posix() for f in files]


def extractions(files: list[Path], settings, workers: int) -> Iterator:
    """Each file's faces (`fakefinder.faces.extract`, decoded as training decoded crop files), in
    input order; with workers, a bounded number of files is in flight."""
    from fakefinder.core.pool import process_map
    from fakefinder.faces.extract import extract_decoded, init_worker

    return process_map(extract_decoded, files, workers, init_worker, (settings.to_json(),), ordered=True)


# ------------------------------------------------------------------------------------------------
# the model side (main process): settings from the artifact, one loop for every face-based kind


def face_settings(
    preprocessing: dict, overrides: dict, face_based: bool = True
) -> tuple[FacesConfig, list[str]]:
    """How predict finds faces: the model's own settings (as in training) with `predict.faces`
    overrides on top. A face-based model trained on ready crops (`faces.detect: false`) gets
    detection with the default detector on raw inputs unless the overrides say `detect: false`.
    Returns the settings and notes for the user (what was changed or ignored)."""
    unknown = sorted(set(overrides) - set(FacesConfig.model_fields))
    if unknown:
        raise ConfigError(
            f"predict.faces: unknown key(s) {unknown}; face settings are {sorted(FacesConfig.model_fields)}"
        )
    saved = dict(preprocessing.get("faces") or {})
    if saved and "box_convention" not in saved:
        saved["box_convention"] = (
            "detector"  # trained before boxes were mapped to one convention: crop as then
        )
    notes = []
    detecting_anew = face_based and saved.get("detect") is False and "detect" not in overrides
    if detecting_anew:
        kept = {k: saved[k] for k in ("size", "square") if k in saved}
        saved = {**FacesConfig().model_dump(mode="json"), **kept}
    from fakefinder.config import section_from_saved

    faces, ignored = section_from_saved(
        FacesConfig, {**saved, **overrides}, "the model's face settings + predict.faces"
    )
    if detecting_anew:
        notes.append(
            f"the model was trained on ready face crops (faces.detect: false): faces are detected in the "
            f"inputs with {faces.detector} (fallback {faces.fallback}); set predict.faces.detect=false "
            "when the inputs are face crops already"
        )
    if ignored:
        notes.append(f"face settings this version does not know were ignored: {ignored}")
    return faces, notes


class FilePredictor(Predictor):
    """A predictor of images and videos: `run` is the shared predict loop (`predict_media`); the
    defaults are a binary deepfake detector's.

    A kind that scores crops independently of their file implements `score` (crops of any files
    -> one row of scores per crop) and `file_result` (a file's row from its crops' scores), and
    predict batches crops across files; otherwise it implements `predict_file`."""

    face_based = True  # crops are faces (detected unless the model was trained on ready crops)
    details_default: str | None = None  # a details file written beside the submission by default
    threshold: float | None = None
    preprocessing: dict

    def score(self, crops: list[np.ndarray], batch_size: int) -> np.ndarray | None:
        """Scores of crops from any files, one row per crop (None: this kind scores file by file)."""
        return None

    def file_result(
        self, file_id: str, found, scores: np.ndarray, pc, threshold: float | None
    ) -> tuple[dict, list[dict]]:
        """The file's row from its crops' `score` rows."""
        raise NotImplementedError

    def predict_file(self, file_id: str, found, pc, threshold: float | None) -> tuple[dict, list[dict]]:
        """The file's row of the table (`label` and the kind's columns) and its per-crop details."""
        scores = self.score([c.pixels for c in found.crops], pc.batch_size) if found.crops else None
        return self.file_result(file_id, found, scores, pc, threshold)

    def heatmaps(self, crops: list[np.ndarray], faces: list[dict], method: str = "auto") -> list[np.ndarray]:
        """Where the model looked in each crop (`faces`: the crops' detail rows): float maps in [0, 1]
        of each crop's size (`fakefinder.engine.evidence`)."""
        raise ConfigError(f"predict.heatmaps: {self.kind} models draw no heatmaps")

    def heatmap_caveat(self) -> str | None:
        """Why its heatmaps should not be read as evidence (None: they beat a face prior on validation)."""
        return None

    def evidence_weight(self, face: dict) -> float:
        """How much a crop's detail row weighs in its file's answer (its heatmap is drawn first)."""
        return float(face.get("score", 0.0))

    def submission_columns(self, pc) -> list[str]:
        return ["id", "label" if pc.format == "label" else "probability"]

    def details(self) -> dict:
        return {}

    def summary(self, frame: pd.DataFrame) -> str:
        return ""

    def run(self, config: Config, events=None) -> PredictResult:
        return predict_media(self, config, events)


class CrossFileBatcher:
    """Scores the crops of consecutive files in full batches of `batch_size` (a file's crops may
    share a batch with the next file's), and hands each file back, in order, once all its crops
    are scored. At most one batch plus one file's crops wait. A file's `classify_s` is its share of
    the batches its crops were in, plus its own aggregation."""

    def __init__(
        self, predictor: FilePredictor, pc, threshold: float | None, across_files: bool = True
    ) -> None:
        self.predictor, self.pc, self.threshold, self.across = predictor, pc, threshold, across_files
        self._files: list[list] = []  # [file_id, found, classify_s]
        self._crops: list[np.ndarray] = []  # not yet scored, in file order
        self._scores: list[np.ndarray] = []
        self._scored = 0  # crops of self._files scored so far

    def add(self, file_id: str, found) -> list[tuple[str, object, dict, list[dict], float]]:
        self._files.append([file_id, found, 0.0])
        self._crops += [c.pixels for c in found.crops]
        while len(self._crops) >= self.pc.batch_size:
            self._score(self.pc.batch_size)
        return self._done() if self.across else self.finish()

    def finish(self) -> list[tuple[str, object, dict, list[dict], float]]:
        if self._crops:
            self._score(len(self._crops))
        return self._done()

    def _score(self, count: int) -> None:
        t0 = time.perf_counter()
        batch, self._crops = self._crops[:count], self._crops[count:]
        self._scores.append(self.predictor.score(batch, self.pc.batch_size))
        share = (time.perf_counter() - t0) / count
        start = 0
        for entry in self._files:  # charge each file for its crops in this batch
            n = len(entry[1].crops)
            lo, hi = max(start, self._scored), min(start + n, self._scored + count)
            entry[2] += max(0, hi - lo) * share
            start += n
        self._scored += count

    def _done(self) -> list[tuple[str, object, dict, list[dict], float]]:
        out = []
        scores = np.concatenate(self._scores) if self._scores else None
        used = 0
        while self._files and len(self._files[0][1].crops) <= self._scored - used:
            file_id, found, classify_s = self._files.pop(0)
            n = len(found.crops)
            t0 = time.perf_counter()
            row, faces = self.predictor.file_result(
                file_id, found, scores[used : used + n] if n else None, self.pc, self.threshold
            )
            out.append((file_id, found, row, faces, classify_s + time.perf_counter() - t0))
            used += n
        if used:
            self._scores = [scores[used:]]
            self._scored -= used
        return out


def _write_outputs(
    predictor: FilePredictor, pc, frame: pd.DataFrame, details: list[dict], threshold
) -> tuple[Path, Path | None]:
    """The submission CSV and, where asked for or the kind has one by default, the details file."""
    submission = frame[predictor.submission_columns(pc)].rename(columns={"id": pc.id_column})
    output = Path(pc.output)
    atomic_write(output, lambda h: submission.to_csv(h, index=False, quoting=csv.QUOTE_MINIMAL))
    if not (pc.details or predictor.details_default or pc.heatmaps):
        return output, None
    default = predictor.details_default or "_details.csv"  # heatmaps are listed there
    details_path = Path(pc.details) if pc.details else output.with_name(output.stem + default)
    payload = {
        "kind": predictor.kind,
        "threshold": threshold,
        **predictor.details(),
        "files": frame.to_dict(orient="records"),
        "faces": details,
    }
    if details_path.suffix.lower() == ".json":
        atomic_write_text(details_path, json.dumps(payload, indent=1, default=str))
    else:
        merged = pd.DataFrame(details) if details else pd.DataFrame(columns=["id"])
        merged = frame.drop(columns=["path"]).merge(merged, on="id", how="left", suffixes=("", "_face"))
        atomic_write(details_path, lambda h: merged.to_csv(h, index=False))
    return output, details_path


def _heatmap_caveats(predictor: FilePredictor, pc) -> list[str]:
    caveat = predictor.heatmap_caveat() if pc.heatmaps else None
    return [f"heatmaps are experimental: {caveat}"] if caveat else []


def _pace(started: float, finished: list[float]) -> dict:
    """`first_file_s`: from the start to the first file done (worker start-up and warm-up included);
    `steady_s_per_file`: the pace after it (None with fewer than two files), what a longer run goes at."""
    if not finished:
        return {"first_file_s": None, "steady_s_per_file": None}
    steady = (finished[-1] - finished[0]) / (len(finished) - 1) if len(finished) > 1 else None
    return {"first_file_s": finished[0] - started, "steady_s_per_file": steady}


def _heatmap_line(totals: dict, details: list[dict]) -> str:
    drawn = sum(1 for face in details if face.get("heatmap"))
    each = 1000 * totals["heatmap_s"] / drawn if drawn else 0.0
    return f"heatmaps: {drawn} in {totals['heatmap_s']:.1f} s ({each:.0f} ms per crop, regions included)"


def _announce(events, predictor, pc, frame, details, threshold, seconds, totals, paths) -> None:
    """The predict result event: counts, timings and where the files are."""
    output, details_path = paths
    files, rate = len(frame), len(frame) / seconds if seconds else float("inf")
    no_face = int((frame.reason != "").sum())
    at = (
        f"threshold {threshold:.3f}; {no_face} without a usable face (score {pc.no_face_score})"
        if threshold is not None
        else f"{no_face} unreadable"
    )
    lines = [
        f"predicted {files} file(s) in {seconds:.1f} s ({rate:.2f} files/s); {at}; decode "
        f"{totals['decode_s']:.1f} s, detect {totals['detect_s']:.1f} s, classify {totals['classify_s']:.1f} "
        f"s",
        _heatmap_line(totals, details) if pc.heatmaps else "",
        predictor.summary(frame),
        f"submission: {output}",
        f"details: {details_path}" if details_path else "",
    ]
    events.result(
        "predict",
        {
            "files": files,
            "seconds": seconds,
            "no_face": no_face,
            "threshold": threshold,
            "submission": str(output),
            "details": str(details_path) if details_path else None,
            **totals,
        },
        "\n".join(line for line in lines if line),
    )


def predict_media(predictor: FilePredictor, config: Config, events=None) -> PredictResult:
    """The images and videos `predict.inputs` names answered by `predictor` (any kind whose predictor
    takes crops: deepfake detectors, DX-LLaVA, classifiers): a submission CSV, optional details."""
    from fakefinder.core.events import as_events
    from fakefinder.engine.evidence import attach_heatmaps
    from fakefinder.faces.extract import ExtractSettings

    events = as_events(events)
    pc = config.predict
    files = list_inputs(pc.inputs)
    ids = file_ids(files)
    with flush_denormal():
        faces, notes = face_settings(predictor.preprocessing, pc.faces, predictor.face_based)
        for note in [*notes, *getattr(predictor, "notes", []), *_heatmap_caveats(predictor, pc)]:
            events.warning(note, "predict")
        settings = ExtractSettings.from_preprocessing(predictor.preprocessing, faces, pc.frames_per_video)
        threshold = pc.threshold if pc.threshold is not None else predictor.threshold
        started = time.perf_counter()
        table, details, finished = [], [], []
        totals = {
            "decode_s": 0.0,
            "detect_s": 0.0,
            "classify_s": 0.0,
            **({"heatmap_s": 0.0} if pc.heatmaps else {}),
        }
        heatmap_folder = Path(pc.output).parent / "heatmaps"
        stage = events.stage("predict", total=len(files))
        batcher = CrossFileBatcher(predictor, pc, threshold, pc.batch_across_files)
        scores_crops = predictor.score.__func__ is not FilePredictor.score

        def record(file_id, found, row, face_rows, classify_s):
            finished.append(time.perf_counter())
            if pc.heatmaps:
                t0 = time.perf_counter()
                attach_heatmaps(predictor, file_id, found, face_rows, heatmap_folder, pc)
                totals["heatmap_s"] += time.perf_counter() - t0
            details.extend(face_rows)
            totals["decode_s"] += found.decode_s
            totals["detect_s"] += found.detect_s
            totals["classify_s"] += classify_s
            table.append(
                {
                    "id": file_id,
                    "path": str(found.path),
                    **row,
                    "frames": found.frames,
                    "faces": len(found.crops),
                    "reason": found.reason,
                    "decode_s": round(found.decode_s, 3),
                    "detect_s": round(found.detect_s, 3),
                    "classify_s": round(classify_s, 3),
                }
            )
            stage.advance()

        try:
            for file_id, found in zip(ids, extractions(files, settings, pc.num_workers)):
                if scores_crops:
                    for done in batcher.add(file_id, found):
                        record(*done)
                    continue
                t0 = time.perf_counter()
                row, face_rows = predictor.predict_file(file_id, found, pc, threshold)
                record(file_id, found, row, face_rows, time.perf_counter() - t0)
            for done in batcher.finish() if scores_crops else []:
                record(*done)
        finally:
            events.end(stage)
    seconds = time.perf_counter() - started
    totals.update(_pace(started, finished))
    frame = pd.DataFrame(table).sort_values("id", kind="mergesort").reset_index(drop=True)
    output, details_path = _write_outputs(predictor, pc, frame, details, threshold)
    _announce(events, predictor, pc, frame, details, threshold, seconds, totals, (output, details_path))
    rate = len(files) / seconds if seconds else float("inf")
    return PredictResult(output, details_path, frame, seconds, rate, totals)
