"""Training an image classifier: the class folders' train and val images through the classification
family's loop (N logits, softmax); each newly selected epoch's weights become the artifact."""

from __future__ import annotations

from pathlib import Path

from fakefinder.config import Config
from fakefinder.core.results import TrainSummary
from fakefinder.tasks.image_classifier.data import folders_of

KIND = "image_classifier"


def preprocessing(config: Config, info: dict) -> dict:
    """The images as training read them: whole, resized to the input size (no face detection)."""
    size = int(info["image_size"])
    return {
        "input_size": size,
        "mean": list(info["mean"]),
        "std": list(info["std"]),
        "tta": config.model.tta,
        "channels_last": config.train.channels_last,
        "faces": {"detect": False, "size": size, "square": True},
        "frames": {
            "frames_per_video": config.data.frames_per_video,
            "frame_stride": config.data.frame_stride,
            "seek": config.data.seek,
        },
        "crop": {"format": "none"},
    }


def train(
    config: Config, resume: bool | str | Path = False, events=None, overwrite: bool = False
) -> TrainSummary:
    from fakefinder.core.artifact import training_summary, write_artifact
    from fakefinder.tasks.classification.model import architecture
    from fakefinder.tasks.classification.train import TrainData
    from fakefinder.tasks.classification.train import train as run
    from fakefinder.tasks.registry import get_task

    folders = folders_of(config)
    rows = folders.rows
    data = TrainData(
        rows[rows.split == "train"].reset_index(drop=True),
        rows[rows.split == "val"].reset_index(drop=True),
        folders.root,
        folders.classes,
        False,
        str(folders.root),
        folders.failures,
    )
    plain = config.model_dump(mode="json")

    def save_model(folder: Path, weights: dict, state: dict) -> None:
        write_artifact(
            folder,
            KIND,
            architecture(state["model_info"]),
            folders.classes,
            preprocessing(config, state["model_info"]),
            weights,
            None,
            training_summary({**state, "config": plain}),
        )

    return run(
        config,
        data,
        get_task(config.task),
        resume=resume,
        events=events,
        save_model=save_model,
        overwrite=overwrite,
    )
