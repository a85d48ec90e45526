"""The `deepfake_detector` kind's functions: train on a prepared manifest, load an artifact for
predict, evaluate on the manifest's sets."""

from __future__ import annotations

from pathlib import Path

from fakefinder.config import Config


def train(config: Config, resume: bool | str | Path = False, events=None, overwrite: bool = False):
    from fakefinder.engine.trainer import train as run
    from fakefinder.tasks.deepfake.artifact import save_detector

    def save_model(folder: Path, weights: dict, state: dict) -> None:
        save_detector(folder, config, state["model_info"], weights, state["threshold"], state)

    return run(config, resume=resume, events=events, save_model=save_model, overwrite=overwrite)


def load(artifacts: list, device="cpu", config: Config | None = None):
    from fakefinder.infer.predict import DetectorEnsemble

    return DetectorEnsemble(artifacts, device, config or Config())


def evaluate(config: Config, models: list[Path], events=None):
    from fakefinder.eval.evaluate import evaluate as run

    return run(config, models, events=events)


def default_model(config: Config) -> Path:
    return Path(config.train.output_dir) / "model"


def manifest_path(config: Config) -> Path:
    """The prepared manifest this config trains on."""
    return Path(config.train.manifest or Path(config.prepare.output_dir) / config.prepare.manifest_name)
