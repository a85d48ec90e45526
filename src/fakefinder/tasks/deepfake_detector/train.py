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

    data = train_data(config)
    summary = run(
        config,
        data,
        get_task(config.task),
        resume=resume,
        events=events,
        save_model=save_model,
        overwrite=overwrite,
    )
    if int(os.environ.get("RANK", "0")) == 0 and summary.artifact and Path(summary.artifact).is_dir():
        from fakefinder.core.checkpoint import rng_state, set_rng_state

        callers = rng_state()  # building networks draws random weights: the caller's generators stay theirs
        try:
            method, smooth = "auto", None
            if config.train.mask_refit:
                method, smooth = refit_localiser(Path(summary.artifact), data, events)
            check_heatmaps(Path(summary.artifact), data, events, method, smooth)
        finally:
            set_rng_state(callers)
    return summary


def refit_localiser(artifact: Path, data, events) -> tuple[str, float]:
    """`train.mask_refit`: the localiser chosen on validation written into the artifact (its scores
    unchanged); returns the heatmap method it draws with and the blur of its maps."""
    from fakefinder.core.events import as_events
    from fakefinder.tasks.classification.scoring import load_detector
    from fakefinder.tasks.deepfake_detector.refit import candidates, choose, save_choice

    events = as_events(events)
    detector = load_detector(artifact)
    choice = choose(
        detector, candidates(detector, data.train_rows, data.root, events=events), data.val_rows, data.root
    )
    figures = "; ".join(
        f"{name} pointing {v['pointing']:.3f} pixel AUC {v['pixel_auc']:.3f}"
        for name, v in choice.validation.items()
        if v.get("pointing") is not None and v.get("pixel_auc") is not None
    )
    events.log(
        f"localiser chosen on {choice.fakes} validation fakes: {choice.name}, blur {choice.smooth:g} "
        f"({figures})",
        "train",
    )
    save_choice(detector, choice, artifact)
    return ("cam" if choice.name == "cam" else "auto"), choice.smooth


def check_heatmaps(artifact: Path, data, events, method: str = "auto", smooth: float | None = None) -> None:
    """Measure the new model's heatmaps on the validation fakes with a true mask, beside the face
    prior, and record it in the artifact (`localiser.json`): evaluate, predict and the platform
    offer them as evidence only where they beat the prior. A failure here costs no finished work."""
    from fakefinder.core.events import as_events
    from fakefinder.tasks.classification.heatmaps import write_record
    from fakefinder.tasks.classification.scoring import load_detector
    from fakefinder.tasks.deepfake_detector.localiser import validate

    events = as_events(events)
    try:
        record = validate(load_detector(artifact), data.val_rows, data.root, method, smooth=smooth)
    except (ValueError, OSError, RuntimeError) as exc:
        events.warning(f"heatmaps not checked on validation: {exc}", "train")
        return
    write_record(artifact, record)
    if not record["fakes"]:
        events.log("heatmaps: no validation fake has a true mask to check them against", "train")
        return
    mine, prior = record["validation"]["map"], record["validation"]["face_prior"]
    verdict = (
        "offered as evidence" if record["beats_prior"] else "experimental: not better than the face prior"
    )
    events.log(
        f"heatmaps ({record['method']}) on {record['fakes']} validation fakes: pointing game "
        f"{mine['pointing']:.3f} (face prior {prior['pointing']:.3f}), pixel AUC {mine['pixel_auc']:.3f} "
        f"({prior['pixel_auc']:.3f}): {verdict}",
        "train",
    )
