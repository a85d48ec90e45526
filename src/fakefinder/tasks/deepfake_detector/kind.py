"""The `deepfake_detector` kind's functions: train on a prepared manifest, load an artifact for
predict, evaluate on the manifest's sets."""

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


def train(config: Config, resume: bool | str | Path = False, events=None, overwrite: bool = False):
    from fakefinder.tasks.classification.train import train as run
    from fakefinder.tasks.deepfake_detector.artifact import save_detector

    def save_model(folder: Path, weights: dict, state: dict) -> None:
        save_detector(folder, config, state["model_info"], weights, state["threshold"], state)

    return run(config, train_data(config), resume=resume, events=events, save_model=save_model, overwrite=overwrite)


def load(artifacts: list, device="cpu", config: Config | None = None):
    from fakefinder.tasks.deepfake_detector.predict import DetectorEnsemble

    return DetectorEnsemble(artifacts, device, config or Config())


def evaluate(config: Config, models: list[Path], events=None):
    from fakefinder.tasks.deepfake_detector.evaluate import evaluate as run

    return run(config, models, events=events)


def default_model(config: Config) -> Path:
    return Path(config.train.output_dir) / "model"


def dataset_settings(path: Path) -> dict:
    """A prepared folder (its manifest.csv or .parquet) or a manifest file."""
    if path.is_dir():
        found = [path / name for name in ("manifest.csv", "manifest.parquet") if (path / name).is_file()]
        if not found:
            raise ConfigError(f"{path} holds no manifest.csv: prepare the dataset first")
        path = found[0]
    return {"train.manifest": str(path)}


def manifest_path(config: Config) -> Path:
    """The prepared manifest this config trains on."""
    return Path(config.train.manifest or Path(config.prepare.output_dir) / config.prepare.manifest_name)
