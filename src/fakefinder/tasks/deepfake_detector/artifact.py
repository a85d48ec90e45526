"""What a deepfake detector's artifact holds, the network built from it, and the safe conversion of
checkpoint files written before artifacts existed (`best.pt`, read with the weights-only loader)."""

from __future__ import annotations

from pathlib import Path

from fakefinder.config import Config
from fakefinder.core.artifact import Artifact, ArtifactError, training_summary, write_artifact
from fakefinder.core.checkpoint import load_checkpoint
from fakefinder.tasks.classification.model import architecture

KIND = "deepfake_detector"
CLASSES = ["real", "fake"]


def preprocessing(config: dict, info: dict) -> dict:
    """What the model saw in training, from a run's config as plain data (so an older config whose
    keys have moved on still converts): input size and normalisation, test-time augmentation, and
    how its crops were made (frames, face detection, crop encoding)."""
    model, data, prepare = config.get("model", {}), config.get("data", {}), config.get("prepare", {})
    return {
        "input_size": int(info["image_size"]),
        "mean": list(info["mean"]),
        "std": list(info["std"]),
        "tta": model.get("tta", "none"),
        "channels_last": bool(config.get("train", {}).get("channels_last", False)),
        "faces": dict(config.get("faces", {})),
        "frames": {
            "frames_per_video": data.get("frames_per_video", 32),
            "frame_stride": data.get("frame_stride"),
            "seek": data.get("seek", "auto"),
        },
        "crop": {"format": prepare.get("image_format", "jpg"), "quality": prepare.get("jpeg_quality", 95)},
    }


def artifact_from_checkpoint(path: str | Path) -> Artifact:
    """An artifact (in memory) from a `best.pt`/`last.pt` written by `fakefinder train`; the file is
    read with the weights-only loader, and its config only as plain data."""
    path = Path(path)
    state = load_checkpoint(path)
    if "model" not in state or "model_info" not in state:
        raise ArtifactError(
            f"{path} is not a fakefinder detector checkpoint (no model weights and model info)"
        )
    config = state.get("config") or {}
    info = state["model_info"]
    if list(state.get("class_names") or CLASSES) != CLASSES or state.get("threshold") is None:
        raise ArtifactError(
            f"{path} is the resume state of an N-class run, not a deepfake detector's best.pt: its "
            "model artifact is the run's model/ folder"
        )
    meta = {
        "format": "fakefinder-model",
        "format_version": 1,
        "kind": KIND,
        "architecture": architecture(info),
        "classes": list(state.get("class_names") or CLASSES),
        "threshold": float(state.get("threshold", 0.5)),
        "preprocessing": preprocessing(config, info),
        "training": training_summary(state),
        "converted_from": str(path),
    }
    return Artifact(path.parent, meta, tensors=state["model"])


def save_detector(
    folder: Path, config: Config, info: dict, weights: dict, threshold: float, state: dict
) -> Artifact:
    """The trainer's artifact of its selected weights."""
    plain = config.model_dump(mode="json")
    return write_artifact(
        folder,
        KIND,
        architecture(info),
        CLASSES,
        preprocessing(plain, info),
        weights,
        threshold,
        training_summary({**state, "config": plain}),
    )
