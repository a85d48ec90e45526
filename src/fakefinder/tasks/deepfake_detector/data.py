"""The deepfake detector's data: a prepared manifest of face crops (`fakefinder prepare`), its train
and val rows, and a prepared dataset folder described for the platform."""

from __future__ import annotations

from pathlib import Path

from fakefinder.config import Config, ConfigError


def train_data(config: Config):
    """The prepared manifest's train and val rows (train.datasets / train.val_datasets); with
    `augment.sbi_reals_only`, the real training crops only."""
    from fakefinder.faces.manifest import CLASS_NAMES, read_manifest, select_rows
    from fakefinder.tasks.classification.train import TrainData

    train = config.train
    path = manifest_path(config)
    manifest = read_manifest(path)
    train_rows = select_rows(manifest, "train", train.datasets)
    if config.augment.sbi_reals_only:
        train_rows = train_rows[train_rows.label == "real"].reset_index(drop=True)
    val_rows = select_rows(manifest, "val", train.val_datasets or train.datasets)
    return TrainData(train_rows, val_rows, Path(manifest.attrs["root"]), CLASS_NAMES, True, str(path))


MANIFESTS = ("manifest.csv", "manifest.parquet")
SAMPLED_CROPS = 200  # manifest rows whose crop is looked for on disk when a folder is described


def dataset_settings(path: Path) -> dict:
    """A prepared folder (its manifest.csv or .parquet) or a manifest file."""
    if path.is_dir():
        found = [path / name for name in MANIFESTS if (path / name).is_file()]
        if not found:
            raise ConfigError(f"{path} holds no manifest.csv: prepare the dataset first")
        path = found[0]
    return {"train.manifest": str(path)}


def manifest_path(config: Config) -> Path:
    """The prepared manifest this config trains on."""
    return Path(config.train.manifest or Path(config.prepare.output_dir) / config.prepare.manifest_name)


def describe(path: Path) -> dict | None:
    """A folder holding a prepared manifest (manifest.csv or .parquet): its rows per split and class;
    a sample of its crops checked on disk."""
    from fakefinder.core.describe import READ_ERRORS, described, split_counts
    from fakefinder.faces.manifest import read_manifest

    manifest = next((path / name for name in MANIFESTS if (path / name).is_file()), None)
    if manifest is None:
        return None
    try:
        frame = read_manifest(manifest)
    except READ_ERRORS as exc:
        return described("prepared", notes=[f"{manifest.name} cannot be used: {exc}"], usable=False)
    notes = []
    missing = [split for split in ("train", "val") if split not in set(frame.split)]
    if missing:
        notes.append(f"no {' or '.join(missing)} rows in {manifest.name}: training needs train and val")
    step = max(1, len(frame) // SAMPLED_CROPS)
    checked = list(frame.path.iloc[::step])
    absent = [rel for rel in checked if not (path / str(rel)).is_file()]
    if absent:
        notes.append(f"{len(absent)} of {len(checked)} checked crops are missing (e.g. {absent[0]})")
    return described("prepared", split_counts(zip(frame.split, frame.label)), notes, usable=not missing)
