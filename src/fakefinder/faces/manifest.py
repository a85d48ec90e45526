"""The manifest `fakefinder prepare` writes (one row per face crop: path, label, split, dataset,
group, frame, box, ...): read back, checked, and its rows of one split selected."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fakefinder.core.errors import FakefinderError

CLASS_NAMES = ["real", "fake"]  # a deepfake manifest's labels, in the order of the model output (fake = 1)


class ManifestError(FakefinderError, ValueError):
    """A manifest that is missing, unreadable or lacks what training needs."""


def read_manifest(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            f"manifest not found: {path} (run `fakefinder prepare` first, or set train.manifest)"
        )
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = {"path", "label", "split"} - set(frame.columns)
    if missing:
        raise ManifestError(f"manifest {path} lacks column(s) {sorted(missing)}")
    bad = sorted(set(frame.label) - set(CLASS_NAMES))
    if bad:
        raise ManifestError(f"manifest {path}: unknown label(s) {bad}; expected real/fake")
    if "dataset" not in frame.columns:
        frame["dataset"] = "data"
    frame.attrs["root"] = str(path.parent)
    return frame


def select_rows(frame: pd.DataFrame, split: str, datasets: list[str] | None) -> pd.DataFrame:
    rows = frame[frame.split == split]
    if datasets:
        unknown = sorted(set(datasets) - set(frame.dataset))
        if unknown:
            raise ManifestError(
                f"dataset(s) {unknown} not in the manifest (it has {sorted(set(frame.dataset))})"
            )
        rows = rows[rows.dataset.isin(datasets)]
    return rows.reset_index(drop=True)
