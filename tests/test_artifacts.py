"""The kind registry and its dispatch, model artifacts (round trip, older checkpoint files, renamed
config keys) and the safe loaders: a crafted pickle runs nothing."""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import fakefinder
from conftest import cli, make_crops, train_config
from fakefinder.config import ConfigError, config_from_dict
from fakefinder.core.artifact import ArtifactError, read_artifact, write_artifact
from fakefinder.core.checkpoint import CheckpointError, load_checkpoint
from fakefinder.tasks import UnknownTaskError, get_task, read_model, task_for_config, task_for_models
from fakefinder.tasks.classification.scoring import load_detector


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One epoch of the tiny detector on ready face crops (faces.detect: false), no EMA: the
    artifact holds exactly last.pt's weights."""
    root = tmp_path_factory.mktemp("artifacts")
    manifest = make_crops(root / "crops", groups=6)
    config = train_config(manifest, root / "run", epochs=1, batch_size=2)
    config.faces.detect = False
    result = fakefinder.train(config)
    return root, config, result


def logits(model, seed: int = 0) -> torch.Tensor:
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


def network_from_state(state: dict):
    from fakefinder.tasks.classification.model import create

    info = state["model_info"]
    model = create(info["name"], dropout=info["dropout"], frequency=info["frequency"])
    model.load_state_dict(state["model"])
    return model.eval()


# ---------------------------------------------------------------------------------------------
# registry and dispatch


def test_unknown_kind_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'deepfake_detecter'.*deepfake_detector, dx_llava"):
        config_from_dict({"task": "deepfake_detecter"})
    with pytest.raises(UnknownTaskError, match="did you mean 'dx_llava'.*known kinds: .*deepfake_detector"):
        get_task("dx_lava")
    write_artifact(tmp_path / "odd", "no_such_kind", {}, [], {})
    with pytest.raises(UnknownTaskError, match="unknown model kind 'no_such_kind'"):
        task_for_models([tmp_path / "odd"])


def test_dispatch_from_config_and_from_artifact(run):
    root, config, result = run
    assert task_for_config(config).name == "deepfake_detector"
    assert task_for_config(config_from_dict({"task": "dx_llava"})).name == "dx_llava"
    task, (artifact,) = task_for_models([result.artifact])
    assert task.name == "deepfake_detector" and artifact.kind == "deepfake_detector"
    with pytest.raises(ConfigError, match="different kinds"):
        write_artifact(root / "other", "dx_llava", {}, ["real", "fake"], {})
        task_for_models([result.artifact, root / "other"])


def test_renamed_config_keys_are_taken_under_their_new_name_with_a_note():
    config = config_from_dict({"predict": {"checkpoints": ["a/best.pt"]}})
    assert config.predict.models == [Path("a/best.pt")]
    assert config.notes == ["'predict.checkpoints' is called 'predict.models' now"]


# ---------------------------------------------------------------------------------------------
# artifacts


def test_artifact_round_trip_gives_identical_logits(run):
    root, config, result = run
    meta = json.loads((result.artifact / "model.json").read_text())
    assert meta["format"] == "fakefinder-model" and meta["format_version"] == 1
    assert meta["kind"] == "deepfake_detector" and meta["classes"] == ["real", "fake"]
    assert meta["threshold"] == pytest.approx(result.details["threshold"])
    assert meta["files"] == ["model.safetensors"] and meta["architecture"]["name"] == "test_efficientnet"
    pre = meta["preprocessing"]
    assert pre["input_size"] == 32 and len(pre["mean"]) == 3 and pre["tta"] == "none"
    assert pre["crop"] == {"format": "jpg", "quality": 95} and pre["faces"]["detector"] == "retinaface"
    assert meta["training"]["best_epoch"] == 1 and "val_auc" in meta["training"]["validation"]
    loaded = load_detector(result.artifact)
    trained = network_from_state(load_checkpoint(result.details["resume_state"]))
    assert torch.equal(logits(loaded.model), logits(trained))
    assert loaded.threshold == pytest.approx(result.details["threshold"])


def test_resume_state_holds_only_tensors_and_plain_values(run):
    _, _, result = run
    state = torch.load(
        result.details["resume_state"], weights_only=True
    )  # no allow-list needed: not even numpy arrays
    assert isinstance(state["rng"][0]["numpy"]["keys"], torch.Tensor)


def test_newer_or_malformed_artifacts_are_refused_naming_the_file(run, tmp_path):
    _, _, result = run
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(result.artifact, copy)
    meta = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99 was written by a newer fakefinder"):
        read_artifact(copy)
    (copy / "model.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"model\.json: not valid JSON"):
        read_artifact(copy)
    (copy / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "classes"}))
    with pytest.raises(ArtifactError, match=r"missing key\(s\) \['classes'\]"):
        read_artifact(copy)
    with pytest.raises(ArtifactError, match="model not found"):
        read_model(tmp_path / "nothing")


def legacy_checkpoint(path, state: dict, config, threshold: float = 0.42, **config_extra) -> None:
    """A best.pt as fakefinder wrote it before artifacts: the whole state in one pickle-based file,
    numpy's RNG state as numpy's own tuple (an array inside), the config as a plain dict."""
    plain = config.model_dump(mode="json")
    for section, extra in config_extra.items():
        plain[section].update(extra)
    payload = {
        key: state[key]
        for key in (
            "model",
            "optimizer",
            "schedule",
            "scaler",
            "ema",
            "epoch",
            "step_in_epoch",
            "global_step",
            "best_metric",
            "best_epoch",
            "bad_epochs",
            "history",
            "model_info",
            "world_size",
        )
    }
    payload.update(
        rng=[{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}],
        config=plain,
        class_names=["real", "fake"],
        threshold=threshold,
    )
    torch.save(payload, path)


def test_an_older_best_pt_loads_safely_and_converts(run, tmp_path):
    root, config, result = run
    state = load_checkpoint(result.details["resume_state"])
    old = tmp_path / "best.pt"
    # keys of a later-renamed (or dropped) setting in the old config must not stop it loading
    legacy_checkpoint(old, state, config, faces={"old_setting": 1}, train={"retired_key": True})
    detector = load_detector(old)
    expected = logits(network_from_state(state))
    assert torch.equal(logits(detector.model), expected) and detector.threshold == pytest.approx(0.42)
    done = cli("convert", old, "-o", tmp_path / "converted")
    assert done.returncode == 0, done.stderr
    converted = read_artifact(tmp_path / "converted")
    assert converted.meta["training"]["converted_from"] == str(old) and converted.threshold == pytest.approx(
        0.42
    )
    assert torch.equal(logits(load_detector(tmp_path / "converted").model), expected)
    from fakefinder.core.artifact import write_converted
    from fakefinder.engine.predict import face_settings
    from fakefinder.tasks import read_model

    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="exists and is not a model artifact"):
        write_converted(read_model(old), tmp_path / "keep")
    assert (
        tmp_path / "keep" / "notes.txt"
    ).read_text() == "mine"  # a folder that is not an artifact is never replaced
    faces, notes = face_settings(converted.preprocessing, {"detector": "retinaface", "detect": True})
    assert faces.detector == "retinaface" and any("old_setting" in n for n in notes)
    with pytest.raises(ConfigError, match="predict.faces: unknown key"):
        face_settings(converted.preprocessing, {"detektor": "x"})


def test_a_model_trained_on_ready_crops_detects_faces_in_raw_videos(run, tmp_path, capsys):
    from fakefinder.synthetic import write_video

    _, config, result = run
    video = write_video(tmp_path / "clip.mp4", identity=3, num_frames=8, size=(120, 160))
    predict = config.model_copy(deep=True)
    predict.predict.models, predict.predict.inputs = [result.artifact], [video]
    predict.predict.output, predict.predict.num_workers = tmp_path / "s.csv", 0
    seen = []
    detected = fakefinder.predict(predict, events=seen.append).table.iloc[0]
    warnings = " ".join(e.message for e in seen if e.type == "warning")
    assert "trained on ready face crops" in warnings and "detected in the inputs with retinaface" in warnings
    from fakefinder.engine.predict import face_settings

    _, notes = face_settings(
        json.loads((result.artifact / "model.json").read_text())["preprocessing"], {"detector": "mediapipe"}
    )
    assert (
        "detected in the inputs with mediapipe" in notes[0]
    )  # the detector that will run, overrides applied
    assert detected.faces > 0 and detected.reason == ""
    details = predict.model_copy(deep=True)
    details.predict.details = tmp_path / "d.csv"
    details.predict.faces = {"detect": False}  # the inputs are crops already: score whole frames
    whole = fakefinder.predict(details)
    rows = json.loads(json.dumps(whole.table.to_dict(orient="records")))[0]
    assert rows["faces"] == rows["frames"] and set(pd_read(tmp_path / "d.csv").detector) == {"none"}


def pd_read(path):
    import pandas as pd

    return pd.read_csv(path)


# ---------------------------------------------------------------------------------------------
# crafted files run nothing


class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    files = {"zip": tmp_path / "best.pt", "raw": tmp_path / "raw.pt"}
    torch.save({"model": {}, "model_info": Payload(marker)}, files["zip"])
    files["raw"].write_bytes(pickle.dumps({"model": Payload(marker)}))
    for path in files.values():
        with pytest.raises(
            CheckpointError, match=f"refused to load {path}: it holds objects other than tensors"
        ):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match="refused"):
            read_model(path)
    # the same through the doors a user takes: predict, evaluate, convert and a resumed run
    for args in (
        ["predict", str(tmp_path), "--model", str(files["zip"])],
        ["convert", str(files["raw"]), "-o", str(tmp_path / "out")],
        ["train", "train.manifest=x.csv", f"train.output_dir={tmp_path}", f"--resume-from={files['zip']}"],
    ):
        done = cli(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    # an artifact whose weight file is a pickle in disguise
    write_artifact(
        tmp_path / "model",
        "deepfake_detector",
        {"name": "test_efficientnet"},
        ["real", "fake"],
        {"input_size": 32, "mean": [0, 0, 0], "std": [1, 1, 1]},
    )
    (tmp_path / "model" / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_detector(tmp_path / "model")
    assert not marker.exists()
