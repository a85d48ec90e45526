"""The `image_classifier` kind on a generated 3-class folder: trains, evaluates (3 x 3 confusion
matrix, per-class report, report.html), predicts (`id,label` + probabilities, the same numbers as
evaluation), exports to ONNX; bad datasets are refused naming the path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fakefinder
from fakefinder import synthetic
from fakefinder.config import ConfigError, config_from_dict
from fakefinder.engine.metrics import multiclass_metrics
from fakefinder.tasks.image_classifier.data import ClassFolderError, read_class_folders

COLOURS = synthetic.CLASS_COLOURS
make_class_folders = synthetic.make_class_folders


def classifier_config(data: Path, out: Path, **train) -> "fakefinder.Config":
    return config_from_dict(
        {
            "task": "image_classifier",
            "classifier": {"data_dir": str(data)},
            "model": {"name": "test_efficientnet", "pretrained": False, "image_size": 32},
            "augment": {"rotate": 0.0, "cutout": 0.0, "jpeg": 0.0},
            "train": {
                "output_dir": str(out / "run"),
                "epochs": 4,
                "batch_size": 6,
                "lr": 3e-3,
                "num_workers": 0,
                "warmup_epochs": 0.2,
                "early_stopping": {"metric": "accuracy", "patience": None},
                "trackers": [],
                "plots": False,
                **train,
            },
            "evaluate": {"output_dir": str(out / "eval"), "num_workers": 0},
            "predict": {"output": str(out / "submission.csv"), "num_workers": 0},
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifier")
    data = make_class_folders(root / "data")
    config = classifier_config(data, root)
    return root, data, config, fakefinder.train(config)


def test_kind_defaults_are_the_recipe():
    config = config_from_dict({"task": "image_classifier"})
    assert (config.model.name, config.model.pretrained, config.model.image_size) == ("resnet50", True, 224)
    assert (config.train.lr, config.train.epochs, config.train.batch_size) == (1e-4, 15, 16)
    assert config_from_dict({}).model.name == "efficientnet_b4"  # the detector's defaults stay its own


def test_trains_into_an_artifact_of_its_kind(trained):
    root, _, _, result = trained
    meta = json.loads((result.artifact / "model.json").read_text())
    assert meta["kind"] == "image_classifier" and meta["classes"] == ["blue", "green", "red"]
    assert meta["threshold"] is None and meta["architecture"]["num_outputs"] == 3
    assert (
        meta["preprocessing"]["faces"]["detect"] is False
        and meta["preprocessing"]["crop"]["format"] == "none"
    )
    assert result.history[-1]["val_accuracy"] >= 0.75  # the colours are easy to tell apart
    assert {"val_loss", "val_macro_f1", "train_loss_ce"} <= set(result.history[-1])


def test_evaluates_with_a_3x3_confusion_matrix_that_matches_its_predictions(trained):
    root, _, config, result = trained
    evaluated = fakefinder.evaluate(config)
    metrics = json.loads(evaluated.metrics_file.read_text())
    m = metrics["models"]["run/model"]["sets"]["test"]
    assert np.array(m["confusion"]).shape == (3, 3) and np.array(m["confusion"]).sum() == 12
    assert set(m["per_class"]) == {"blue", "green", "red"} and "top5_accuracy" not in m  # only 3 classes
    predictions = pd.read_csv(evaluated.files["predictions"])
    assert len(predictions) == 12 and m["accuracy"] == pytest.approx(
        (predictions.label == predictions.prediction).mean()
    )
    truth, guess = predictions.label.tolist(), predictions.prediction.tolist()
    classes = ["blue", "green", "red"]
    by_hand = [[sum(1 for t, g in zip(truth, guess) if t == a and g == b) for b in classes] for a in classes]
    assert m["confusion"] == by_hand
    report = evaluated.report_file.read_text()
    assert "data:image/png;base64," in report and "macro_f1" in report and "green" in report


def test_predicts_id_label_and_the_probabilities_evaluation_gave(trained, tmp_path):
    root, data, config, result = trained
    c = config.model_copy(deep=True)
    c.predict.inputs = [data / "test"]
    table = fakefinder.predict(c).table
    submission = pd.read_csv(config.predict.output)
    assert list(submission.columns) == ["id", "label", "prob_blue", "prob_green", "prob_red"]
    probs = submission[["prob_blue", "prob_green", "prob_red"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert list(submission.label) == [["blue", "green", "red"][i] for i in probs.argmax(axis=1)]
    evaluated = pd.read_csv(root / "eval" / "predictions.csv")
    evaluated["id"] = [Path(p).name for p in evaluated.path]
    merged = submission.merge(evaluated, on="id", suffixes=("", "_eval"))
    assert len(merged) == 12
    np.testing.assert_allclose(merged.prob_red, merged.prob_red_eval, atol=1e-5)  # the same pixels both ways
    c.predict.format = "label"
    c.predict.output = tmp_path / "labels.csv"
    fakefinder.predict(c)
    assert list(pd.read_csv(tmp_path / "labels.csv").columns) == ["id", "label"]
    assert len(table) == 12


def test_an_n_class_resume_state_is_not_taken_for_a_detector_checkpoint(trained):
    from fakefinder.core.artifact import ArtifactError
    from fakefinder.tasks import read_model

    _, _, _, result = trained
    with pytest.raises(ArtifactError, match="N-class run.*model/ folder"):
        read_model(result.details["resume_state"])


def test_exports_to_onnx_with_one_output_per_class(trained, tmp_path):
    from fakefinder.tasks.classification.export import export

    _, _, _, result = trained
    report = export(result.artifact, tmp_path / "classifier.onnx")
    assert report.max_abs_diff < 1e-4
    import onnxruntime as ort

    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    assert session.run(None, {"image": x})[0].shape == (2, 3)


def test_top5_and_per_class_metrics_by_hand():
    names = list("abcdef")
    probs = np.eye(6)[[0, 1, 2, 3, 4, 5, 0, 0]] * 0.5 + 0.05 + 0.001 * np.arange(6)  # no ties
    probs[6, 1] = 0.2  # a 'b' predicted as 'a', 'b' second: inside the top 5
    probs[7, 2] = 0.0  # a 'c' predicted as 'a', 'c' last of six: outside
    labels = np.array([0, 1, 2, 3, 4, 5, 1, 2])
    m = multiclass_metrics(labels, probs, names)
    assert m["accuracy"] == pytest.approx(6 / 8) and m["top5_accuracy"] == pytest.approx(7 / 8)
    assert m["per_class"]["a"]["precision"] == pytest.approx(1 / 3) and m["per_class"]["b"][
        "recall"
    ] == pytest.approx(0.5)
    assert m["confusion"][1] == [1, 1, 0, 0, 0, 0]


def test_bad_class_folders_are_named(tmp_path):
    data = make_class_folders(tmp_path / "data", per_split=(("train", 3), ("val", 2)))
    (data / "train" / "empty").mkdir()
    with pytest.raises(ClassFolderError, match=r"train/empty: class folder 'empty' holds no images"):
        read_class_folders(data)
    shutil.rmtree(data / "train" / "empty")
    (data / "val" / "purple").mkdir()
    Image.new("RGB", (8, 8)).save(data / "val" / "purple" / "x.png")
    with pytest.raises(ClassFolderError, match=r"val/purple: class 'purple' is in val but not in train"):
        read_class_folders(data)
    shutil.rmtree(data / "val" / "purple")
    (data / "train" / "red" / "broken.jpg").write_bytes(b"not an image at all")
    folders = read_class_folders(data)
    assert [Path(f["path"]).name for f in folders.failures] == ["broken.jpg"]
    assert "unreadable image" in folders.failures[0]["reason"] and "broken.jpg" not in " ".join(
        folders.rows.path
    )
    with pytest.raises(ClassFolderError, match="expected .*train/<class>/"):
        read_class_folders(tmp_path / "nowhere")


def test_an_unreadable_image_is_listed_and_training_goes_on(tmp_path):
    data = make_class_folders(tmp_path / "data", per_split=(("train", 3), ("val", 2)))
    (data / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    result = fakefinder.train(classifier_config(data, tmp_path, epochs=1))
    failures = pd.read_csv(tmp_path / "run" / "failures.csv")
    assert result.stopped == "completed" and failures.path.str.endswith("broken.jpg").tolist() == [True]


def test_detector_only_settings_are_refused_for_the_classifier(tmp_path):
    data = make_class_folders(tmp_path / "data", per_split=(("train", 3), ("val", 2)))
    with pytest.raises(ConfigError, match="train.mask_loss: for binary real/fake detectors only"):
        fakefinder.train(classifier_config(data, tmp_path, epochs=1, mask_loss=1.0))
    with pytest.raises(ConfigError, match="early_stopping.metric=auc is a binary metric"):
        fakefinder.train(classifier_config(data, tmp_path / "b", epochs=1, early_stopping={"metric": "auc"}))


def test_predict_heatmaps_are_the_cam_of_each_images_predicted_class(trained, tmp_path, monkeypatch):
    from fakefinder.tasks.image_classifier.predict import ClassifierPredictor

    root, data, config, result = trained
    c = config.model_copy(deep=True)
    c.predict.inputs = [sorted((data / "test" / name).glob("*.jpg"))[0] for name in ("blue", "green", "red")]
    c.predict.output = tmp_path / "submission.csv"
    c.predict.heatmaps = True
    drawn = {}
    original = ClassifierPredictor.heatmaps

    def spy(self, crops, faces, method="auto"):
        maps = original(self, crops, faces, method)
        for crop, face, heatmap in zip(crops, faces, maps):
            other = next(name for name in self.classes if name != face["label"])
            drawn[face["id"]] = (crop, heatmap, original(self, [crop], [{"label": other}])[0])
        return maps

    monkeypatch.setattr(ClassifierPredictor, "heatmaps", spy)
    details = pd.read_csv(fakefinder.predict(c).details_path, keep_default_na=False)
    assert len(details) == 3 and (details.regions == "").all()  # whole images: no facial regions
    for _, row in details.iterrows():
        crop, heatmap, other_class = drawn[row["id"]]
        written = np.asarray(Image.open(tmp_path / row["heatmap"]), np.float32) / 255
        assert written.shape == crop.shape[:2]
        np.testing.assert_allclose(written, heatmap, atol=1.5 / 255)
        assert np.abs(heatmap - other_class).max() > 0.05  # each class has its own map
