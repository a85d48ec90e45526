import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fakefinder
from conftest import SMALL_VIDEO
from fakefinder import synthetic
from fakefinder.config import config_from_dict
from fakefinder.core.checkpoint import load_checkpoint
from fakefinder.engine.aggregate import aggregate_scores, aggregate_videos
from fakefinder.engine.metrics import fit_threshold
from fakefinder.tasks.classification.scoring import load_detector, score_crops


def run_config(tmp: Path, **sections) -> dict:
    return {
        "data": {
            "datasets": [{"name": "ffpp", "layout": "ffpp", "root": str(tmp / "ffpp")}],
            "frames_per_video": 3,
            "split": {"train": 0.5, "val": 0.25, "test": 0.25},
        },
        "faces": {"size": 48, "detector": "retinaface", "fallback": ["opencv"]},
        "prepare": {"output_dir": str(tmp / "prepared"), "num_workers": 0},
        "model": {"name": "test_efficientnet", "image_size": 32},
        "train": {
            "output_dir": str(tmp / "run"),
            "epochs": 2,
            "batch_size": 4,
            "num_workers": 0,
            "lr": 2e-3,
            "trackers": [],
            "plots": False,
        },
        "evaluate": {"output_dir": str(tmp / "eval"), "num_workers": 0, "batch_size": 16},
        **sections,
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Prepared FF++-shaped data (4 originals, 2 methods sharing file names) and two checkpoints."""
    tmp = tmp_path_factory.mktemp("pipeline")
    synthetic.make_ffpp_tree(
        tmp / "ffpp", ids=("000", "001", "002", "003", "004", "005", "006", "007"), **SMALL_VIDEO
    )
    config = config_from_dict(run_config(tmp))
    fakefinder.prepare(config, progress=False)
    fakefinder.train(config)
    second = config.model_copy(deep=True)
    second.train.output_dir = tmp / "run2"
    second.train.seed = 1
    fakefinder.train(second)
    return tmp, config


def test_video_aggregation_by_hand():
    scores = np.array([0.1, 0.9, 0.85, 0.2, 0.95])
    assert aggregate_scores(scores, "mean") == pytest.approx(0.6)
    assert aggregate_scores(scores, "max") == pytest.approx(0.95)
    assert aggregate_scores(scores, "topk", top_k=2) == pytest.approx(0.925)
    assert aggregate_scores(scores, "confident") == pytest.approx(
        (0.9 + 0.85 + 0.95) / 3
    )  # 3/5 confidently fake
    assert aggregate_scores(np.array([0.1, 0.15, 0.5, 0.6, 0.7]), "confident") == pytest.approx(0.125)
    assert aggregate_scores(np.array([0.4, 0.5, 0.6]), "confident") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        aggregate_scores(np.array([]), "mean")


def test_videos_are_grouped_by_video_id_not_folder_name():
    # FF++'s methods all have a 000_003 folder; only video_id tells the videos apart
    frames = pd.DataFrame(
        {
            "video_id": ["ff:Deepfakes/000_003"] * 2 + ["ff:FaceSwap/000_003"] * 2 + ["ff:orig/000"] * 2,
            "folder": ["000_003"] * 4 + ["000"] * 2,
            "label": ["fake"] * 4 + ["real"] * 2,
            "method": ["Deepfakes"] * 2 + ["FaceSwap"] * 2 + ["original"] * 2,
            "score": [0.9, 0.7, 0.2, 0.4, 0.1, 0.3],
        }
    )
    videos = aggregate_videos(frames).set_index("video_id")
    assert len(videos) == 3
    assert videos.loc["ff:Deepfakes/000_003", "score"] == pytest.approx(0.8)
    assert videos.loc["ff:FaceSwap/000_003", "score"] == pytest.approx(0.3)
    assert videos.loc["ff:FaceSwap/000_003", "frames"] == 2


def test_threshold_is_fitted_on_validation_only(trained):
    tmp, config = trained
    state = load_checkpoint(tmp / "run" / "last.pt")
    detector = load_detector(tmp / "run" / "model")
    manifest = pd.read_csv(tmp / "prepared" / "manifest.csv")
    val = manifest[manifest.split == "val"].reset_index(drop=True)
    val_scores = score_crops(detector, val, tmp / "prepared", num_workers=0)
    assert state["threshold"] == pytest.approx(
        fit_threshold((val.label == "fake").astype(int), val_scores), abs=1e-6
    )
    # evaluate reports test data with that threshold, whatever the test data would prefer
    result = fakefinder.evaluate(config)
    entry = result.metrics["models"]["run/model"]
    assert entry["threshold"] == pytest.approx(state["threshold"])
    assert entry["threshold_source"].startswith("fitted on validation")


def test_evaluate_outputs_levels_methods_and_report(trained):
    tmp, config = trained
    config = config.model_copy(deep=True)
    config.evaluate.perturbations = ["jpeg50", "downscale0.5"]
    config.evaluate.models = [tmp / "run" / "model", tmp / "run2" / "model"]
    config.evaluate.output_dir = tmp / "eval_full"
    result = fakefinder.evaluate(config)
    metrics = json.loads(result.metrics_file.read_text())
    assert set(metrics["models"]) == {"run/model", "run2/model"}
    levels = metrics["models"]["run/model"]["sets"]["ffpp"]
    for level in ("frame", "video"):
        assert {"auc", "macro_f1", "accuracy", "eer", "ap", "log_loss", "per_class", "confusion"} <= set(
            levels[level]
        )
        assert set(levels[level]["per_method"]) == {"Deepfakes", "Face2Face", "real"}
    assert set(levels["perturbations"]) == {"none", "jpeg50", "downscale0.5"}
    manifest = pd.read_csv(tmp / "prepared" / "manifest.csv")
    test = manifest[manifest.split == "test"]
    assert levels["frame"]["n"] == len(test) and levels["video"]["n"] == test.video_id.nunique()
    predictions = pd.read_csv(result.files["predictions"])
    assert {"path", "video_id", "label", "score", "prediction"} <= set(predictions.columns)
    assert len(predictions) == 2 * len(test)
    videos = pd.read_csv(result.files["video_predictions"])
    assert videos.groupby("model").video_id.nunique().eq(test.video_id.nunique()).all()
    report = result.report_file.read_text()
    assert report.count("data:image/png;base64,") >= 8 and "<table>" in report and "src='http" not in report
    assert len(result.tables["summary"]) == 4  # 2 checkpoints x (frame, video)
    # where the model looked: figures beside both baselines, by area, and the gallery on disk
    evidence = levels["heatmaps"]
    assert evidence["method"] == "cam" and evidence["iou_threshold_source"] == "fitted on validation"
    assert evidence["experimental"] is True  # a 2-epoch model does not beat the face prior
    counted = evidence["overall"]["n"] + sum(evidence["left_out"].values())
    assert counted == (test.label == "fake").sum()
    if evidence["overall"]["n"]:
        assert {"map", "face_prior", "random", "ratios"} <= set(evidence["overall"])
    assert set(evidence["by_area"]) == {"<10%", "10-25%", ">=25%"}
    groups = {entry["group"] for entry in evidence["gallery"]}
    assert groups & {"confident_fakes", "false_negatives"} and groups & {"confident_reals", "false_positives"}
    for entry in evidence["gallery"]:
        assert (result.output_dir / entry["overlay"]).is_file() and (
            result.output_dir / entry["heatmap"]
        ).is_file()
    assert "where the model looked" in report and "Experimental" in report
    assert report.count("data:image/jpeg;base64,") == sum(
        len(e["sets"]["ffpp"]["heatmaps"]["gallery"]) for e in metrics["models"].values()
    )


def test_cross_dataset_sets_in_one_call(trained):
    tmp, config = trained
    config = config.model_copy(deep=True)
    manifest = tmp / "prepared" / "manifest.csv"
    config.evaluate.sets = [
        {"name": "test", "manifest": manifest, "split": "test"},
        {"name": "val", "manifest": manifest, "split": "val"},
    ]
    config.evaluate.output_dir = tmp / "eval_sets"
    result = fakefinder.evaluate(config_from_dict(config.model_dump(mode="json")))
    assert [r["set"] for r in result.tables["summary"] if r["level"] == "video"] == ["test", "val"]


def media_folder(root: Path, tmp: Path) -> Path:
    folder = root / "inputs"
    shutil.copy(
        tmp / "ffpp/original_sequences/youtube/c23/videos/000.mp4", folder / "real.mp4"
    ) if folder.mkdir(parents=True) is None else None
    shutil.copy(tmp / "ffpp/manipulated_sequences/Deepfakes/c23/videos/000_001.mp4", folder / "fake.mp4")
    synthetic.write_image(folder / "still.png", identity=2)
    synthetic.write_video(folder / "noface.mp4", face=False, **SMALL_VIDEO)
    (folder / "corrupt.mp4").write_bytes(b"\x00\x01 not a video")
    return folder


def test_predict_images_videos_corrupt_and_faceless(trained, tmp_path):
    tmp, config = trained
    folder = media_folder(tmp_path, tmp)
    config = config.model_copy(deep=True)
    config.predict.inputs = [folder]
    config.predict.output = tmp_path / "submission.csv"
    config.predict.details = tmp_path / "details.csv"
    config.predict.format = "label"
    config.predict.num_workers = 0
    result = fakefinder.predict(config)
    submission = pd.read_csv(result.submission_path)
    assert list(submission.columns) == ["id", "label"]
    assert list(submission.id) == sorted(["real.mp4", "fake.mp4", "still.png", "noface.mp4", "corrupt.mp4"])
    assert set(submission.label) <= {"REAL", "FAKE"}
    table = result.table.set_index("id")
    assert "no face found" in table.loc["noface.mp4", "reason"]
    assert table.loc["corrupt.mp4", "reason"]
    for bad in ("noface.mp4", "corrupt.mp4"):
        assert table.loc[bad, "probability"] == 0.5
    assert table.loc["real.mp4", "faces"] == 3 and table.loc["still.png", "frames"] == 1
    details = pd.read_csv(result.details_path)
    assert {"frame_index", "box", "score", "decode_s", "detect_s", "classify_s"} <= set(details.columns)
    # same inputs, same output: deterministic order and values
    again = fakefinder.predict(config)
    assert again.table.probability.tolist() == result.table.probability.tolist()


def test_predict_is_the_same_with_and_without_cross_file_batching(trained, tmp_path, monkeypatch):
    """Batches filled with crops of consecutive files give every file and every crop the score it
    gets when each file is scored on its own; the batches really do span files."""
    from fakefinder.tasks.deepfake_detector.predict import DetectorEnsemble

    tmp, config = trained
    folder = media_folder(tmp_path, tmp)
    synthetic.write_video(folder / "third.mp4", identity=3, **SMALL_VIDEO)
    sizes = []
    original = DetectorEnsemble.score

    def spy(self, crops, batch_size):
        sizes.append(len(crops))
        return original(self, crops, batch_size)

    monkeypatch.setattr(DetectorEnsemble, "score", spy)
    runs = {}
    for across in (False, True):
        c = config.model_copy(deep=True)
        c.predict.inputs, c.predict.num_workers, c.predict.batch_size = [folder], 0, 4
        c.predict.output, c.predict.details = tmp_path / f"s{across}.csv", tmp_path / f"d{across}.csv"
        c.predict.batch_across_files = across
        sizes.clear()
        runs[across] = (
            fakefinder.predict(c).table.set_index("id"),
            pd.read_csv(c.predict.details),
            list(sizes),
        )
    (alone, alone_faces, alone_sizes), (batched, batched_faces, batched_sizes) = runs[False], runs[True]
    crops_per_file = alone[alone.faces > 0].faces.tolist()  # 3 frames each: no file fills a batch of 4
    assert sum(alone_sizes) == sum(batched_sizes) == sum(crops_per_file)
    assert alone_sizes == crops_per_file and batched_sizes[:-1] == [4] * (len(batched_sizes) - 1)
    np.testing.assert_allclose(batched.probability, alone.probability, atol=1e-6)
    assert (batched.label == alone.label).all() and (batched.faces == alone.faces).all()
    np.testing.assert_allclose(batched_faces.score, alone_faces.score, atol=1e-6)
    assert (batched.classify_s[batched.faces > 0] > 0).all()  # each file's share of its batches


def test_onnxruntime_and_pytorch_give_the_same_predictions(trained, tmp_path):
    tmp, config = trained
    folder = media_folder(tmp_path, tmp)
    tables = {}
    for backend in ("torch", "onnxruntime"):
        c = config.model_copy(deep=True)
        c.predict.inputs, c.predict.num_workers, c.predict.backend = [folder], 0, backend
        c.predict.output = tmp_path / f"{backend}.csv"
        tables[backend] = fakefinder.predict(c).table.set_index("id")
    np.testing.assert_allclose(tables["onnxruntime"].probability, tables["torch"].probability, atol=1e-5)
    assert (tables["onnxruntime"].label == tables["torch"].label).all()


def test_predict_scores_exactly_the_crops_prepare_wrote(trained, tmp_path, monkeypatch):
    """The same video through predict: for every frame, the crop the model scores is, pixel for
    pixel, the crop file prepare wrote (and training read) for it."""
    from PIL import Image

    from fakefinder.tasks.deepfake_detector.predict import DetectorEnsemble

    tmp, config = trained
    manifest = pd.read_csv(tmp / "prepared" / "manifest.csv")
    rows = manifest[manifest.video_id == manifest.video_id.iloc[0]]
    scored = []
    original = DetectorEnsemble.score

    def spy(self, crops, batch_size):
        scored.extend(crops)
        return original(self, crops, batch_size)

    monkeypatch.setattr(DetectorEnsemble, "score", spy)
    c = config.model_copy(deep=True)
    c.predict.inputs, c.predict.output, c.predict.num_workers = (
        [rows.source_path.iloc[0]],
        tmp_path / "s.csv",
        0,
    )
    c.predict.details = tmp_path / "details.csv"
    fakefinder.predict(c)
    faces = pd.read_csv(tmp_path / "details.csv")
    assert list(faces.frame_index) == list(rows.frame_index) and len(scored) == len(rows)
    for crop, path in zip(scored, rows.path):
        written = np.array(Image.open(tmp / "prepared" / path).convert("RGB"))
        assert crop.shape == written.shape and np.array_equal(crop, written), path


def test_evaluate_on_raw_videos_scores_each_file_as_predict_does(trained, tmp_path):
    """An evaluation set of raw files in their layout: frames and faces as the model was trained,
    every file at video level (faceless ones at predict.no_face_score), the video scores predict gives."""
    tmp, config = trained
    raw = tmp_path / "raw"
    shutil.copytree(tmp / "ffpp", raw)
    synthetic.write_video(raw / "original_sequences/youtube/c23/videos/999.mp4", face=False, **SMALL_VIDEO)
    c = config.model_copy(deep=True)
    c.evaluate.sets = [{"name": "raw", "raw": {"name": "ffpp-raw", "layout": "ffpp", "root": str(raw)}}]
    c.evaluate.output_dir = tmp_path / "eval"
    result = fakefinder.evaluate(config_from_dict(c.model_dump(mode="json")))
    levels = result.metrics["models"]["run/model"]["sets"]["raw"]
    files = sorted(p for p in raw.rglob("*.mp4"))
    assert levels["video"]["n"] == len(files) and levels["faceless_files"] == 1
    videos = pd.read_csv(result.files["video_predictions"])
    c.predict.inputs, c.predict.output, c.predict.num_workers = files, tmp_path / "s.csv", 0
    predicted = fakefinder.predict(c).table
    by_path = dict(zip(predicted.path, predicted.probability))
    for path, score in zip(videos.source_path, videos.score):
        assert score == pytest.approx(by_path[path], abs=1e-6), path
    assert by_path[str(raw / "original_sequences/youtube/c23/videos/999.mp4")] == c.predict.no_face_score


def test_ensemble_is_the_weighted_average(trained, tmp_path):
    tmp, config = trained
    folder = media_folder(tmp_path, tmp)
    outputs = {}
    for name, checkpoints, weights in (
        ("a", ["run"], None),
        ("b", ["run2"], None),
        ("ab", ["run", "run2"], [3, 1]),
    ):
        c = config.model_copy(deep=True)
        c.predict.inputs = [folder / "real.mp4", folder / "fake.mp4", folder / "still.png"]
        c.predict.models = [tmp / r / "model" for r in checkpoints]
        c.predict.weights = weights
        c.predict.aggregation = "mean"
        c.predict.output = tmp_path / f"{name}.csv"
        c.predict.num_workers = 0
        outputs[name] = fakefinder.predict(c).table.set_index("id").probability
    # mean over frames is linear, so the ensemble's video score is the weighted mean of the members'
    np.testing.assert_allclose(outputs["ab"], 0.75 * outputs["a"] + 0.25 * outputs["b"], atol=1e-6)


def test_predict_list_file_and_missing_input(trained, tmp_path):
    tmp, config = trained
    media_folder(tmp_path, tmp)
    listing = tmp_path / "list.txt"
    listing.write_text("inputs/real.mp4\ninputs/still.png\n")
    c = config.model_copy(deep=True)
    c.predict.inputs = [listing]
    c.predict.output = tmp_path / "s.csv"
    c.predict.num_workers = 0
    assert list(fakefinder.predict(c).table.id) == ["real.mp4", "still.png"]
    c.predict.inputs = [tmp_path / "nope"]
    with pytest.raises(FileNotFoundError, match="nope"):
        fakefinder.predict(c)


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_export_parity(trained, tmp_path, suffix):
    from fakefinder.tasks.classification.export import export

    tmp, _ = trained
    report = export(tmp / "run" / "model", tmp_path / f"model{suffix}")
    assert report.path.is_file() and report.max_abs_diff < 1e-4
    if suffix == ".onnx":
        import onnxruntime as ort
        import torch

        session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)  # another batch size
        detector = load_detector(tmp / "run" / "model")
        with torch.no_grad():
            expected = detector.model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(session.run(None, {"image": x})[0], expected, atol=1e-4)


def heatmap_config(config, tmp_path: Path, inputs: list[Path], **predict):
    c = config.model_copy(deep=True)
    c.predict.inputs, c.predict.num_workers = inputs, 0
    c.predict.output = tmp_path / "out" / "submission.csv"
    for key, value in predict.items():
        setattr(c.predict, key, value)
    return c


def test_predict_heatmaps_for_an_image_and_a_video_with_frames_capped(trained, tmp_path):
    from PIL import Image

    tmp, config = trained
    folder = media_folder(tmp_path, tmp)
    inputs = [folder / "real.mp4", folder / "still.png", folder / "noface.mp4"]
    c = heatmap_config(config, tmp_path, inputs, heatmaps=True, heatmap_frames=2, backend="onnxruntime")
    events = []
    result = fakefinder.predict(c, events=events.append)
    warned = [e.message for e in events if e.type == "warning" and "heatmaps are experimental" in e.message]
    assert warned and "did not beat a plain face prior" in warned[0]  # the 2-epoch model's validation check
    plain = fakefinder.predict(heatmap_config(config, tmp_path / "plain", inputs))
    np.testing.assert_allclose(result.table.probability, plain.table.probability, atol=1e-6)
    details = pd.read_csv(result.details_path, keep_default_na=False)
    assert result.details_path == tmp_path / "out" / "submission_details.csv"
    drawn = details[details.heatmap != ""]
    video = drawn[drawn.id == "real.mp4"]
    # the 2 of its 3 frames that weigh most in the video's score
    frames = details[details.id == "real.mp4"].sort_values("score", ascending=False)
    assert sorted(video.frame_index) == sorted(frames.frame_index[:2])
    assert sorted(video.heatmap) == sorted(
        f"heatmaps/real.mp4_f{int(float(f))}.png" for f in frames.frame_index[:2]
    )
    assert list(drawn[drawn.id == "still.png"].heatmap) == ["heatmaps/still.png.png"]
    assert (details[details.id == "noface.mp4"].heatmap == "").all()
    for name, regions in zip(drawn.heatmap, drawn.regions):
        with Image.open(tmp_path / "out" / name) as png:
            assert png.mode == "L" and png.size == (48, 48)  # the crop's own size
        assert (tmp_path / "out" / f"{name[:-4]}_overlay.jpg").is_file()
        shares = dict(part.split(":") for part in regions.split(";"))
        assert 1 <= len(shares) <= 3 and all(0 < float(v) <= 1 for v in shares.values())
    assert set(drawn.regions_from) <= {"face_mesh", "canonical"}
    assert result.timing["heatmap_s"] > 0
    # off by default: no files, no columns
    assert not (tmp_path / "plain" / "out" / "heatmaps").exists() and plain.details_path is None


def test_an_ensembles_heatmap_is_the_weighted_mean_of_its_members(trained, tmp_path):
    from PIL import Image

    tmp, config = trained
    folder = media_folder(tmp_path, tmp)
    maps = {}
    for name, runs, weights in (("a", ["run"], None), ("b", ["run2"], None), ("ab", ["run", "run2"], [3, 1])):
        models = [tmp / r / "model" for r in runs]
        out = tmp_path / name
        c = heatmap_config(config, out, [folder / "still.png"], heatmaps=True, models=models, weights=weights)
        details = pd.read_csv(fakefinder.predict(c).details_path, keep_default_na=False)
        with Image.open(out / "out" / details.heatmap[0]) as png:
            maps[name] = np.asarray(png, np.float32) / 255
    assert not np.allclose(maps["a"], maps["b"], atol=0.05)  # two different members
    np.testing.assert_allclose(maps["ab"], 0.75 * maps["a"] + 0.25 * maps["b"], atol=1.5 / 255)
