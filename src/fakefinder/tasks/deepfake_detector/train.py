"""Training a deepfake detector: raw datasets prepared first when the config names them and no
manifest exists yet, then the family's loop on the manifest's train and val rows; each newly
selected epoch's weights become the artifact (with the threshold fitted on validation)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fakefinder.config import Config
from fakefinder.core.results import TrainSummary
from fakefinder.tasks.deepfake_detector.data import manifest_path, train_data


def prepare_first(config: Config, events) -> None:
    """A config with raw datasets and no manifest yet: prepare them first (rank 0; the other
    torchrun ranks wait for the manifest), so one config goes from raw data to a trained model."""
    if config.train.manifest is not None or not config.data.datasets or manifest_path(config).is_file():
        return
    if int(os.environ.get("RANK", "0")) == 0:
        from fakefinder.core.events import as_events
        from fakefinder.faces.prepare import prepare

        as_events(events).log(
            f"no manifest at {manifest_path(config)}: preparing the datasets first", "train"
        )
        prepare(config, events=events)
        return
    while not manifest_path(config).is_file():  # rank 0 writes it atomically
        time.sleep(2)


def train(
    config: Config, resume: bool | str | Path = False, events=None, overwrite: bool = False
) -> TrainSummary:
    from fakefinder.tasks.classification.train import train as run
    from fakefinder.tasks.deepfake_detector.artifact import save_detector
    from fakefinder.tasks.registry import get_task

    prepare_first(config, events)

    def save_model(folder: Path, weights: dict, state: dict) -> None:
        save_detector(folder, config, state["model_info"], weights, state["threshold"], state)

    return run(
        config,
        train_data(config),
        get_task(config.task),
        resume=resume,
        events=events,
        save_model=save_model,
        overwrite=overwrite,
    )
