"""The object_detector kind: YOLO labels checked with file and line, training from the preset on shape
scenes with known boxes, resume after a kill, mAP evaluation, box predictions, ONNX export, weights
read without unpickling code."""

import csv
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fakefinder
from conftest import kill_when
from fakefinder.config import ConfigError, load_config
from fakefinder.synthetic import make_yolo_dataset, shape_scene
from fakefinder.tasks.object_detector.data import LabelError, read_dataset

PRESET = Path(__file__).parent.parent / "configs" / "yolo-detector.yaml"
SMALL = [
    "object_detector.train.imgsz=64",
    "object_detector.train.batch_size=8",
    "object_detector.train.nbs=8",
    "object_detector.train.num_workers=0",
    "object_detector.train.close_mosaic=0",
    "object_detector.train.warmup_epochs=1",
    "object_detector.train.augment={mosaic: 0.0}",
    "evaluate.batch_size=8",
]


def small_config(dataset: Path, output: Path, epochs: int, *more: str):
    return load_config(
        PRESET,
        [
            f"object_detector.data.path={dataset}",
            f"object_detector.train.output_dir={output}",
            f"object_detector.train.epochs={epochs}",
            f"evaluate.output_dir={output}/eval",
            f"predict.output={output}/boxes.csv",
            *SMALL,
            *more,
        ],
    )


# ---------------------------------------------------------------------------------------------
# the label check


def test_every_bad_label_case_is_reported_with_file_and_line(tmp_path):
    root = make_yolo_dataset(tmp_path / "ds", {"train": 8, "val": 4}, size=64)
    labels = root / "labels" / "train"
    (labels / "train_0000.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n")  # line 2: 4 values
    (labels / "train_0001.txt").write_text("1 0.5 0.5 0.2 0.2\n\n7 0.5 0.5 0.2 0.2\n")  # line 3: class 7 of 3
    (labels / "train_0002.txt").write_text("2 1.25 0.5 0.2 0.2\n")  # line 1: cx outside [0, 1]
    (labels / "train_0003.txt").write_text("0 0.5 abc 0.2 0.2\n")  # line 1: not a number
    (labels / "train_0004.txt").unlink()  # an image without a label file: background
    (labels / "stray.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # a label file without an image
    with pytest.raises(LabelError) as caught:
        read_dataset(root)
    message = str(caught.value)
    assert "labels/train/train_0000.txt:2: expected 5 values" in message
    assert "labels/train/train_0001.txt:3: class id 7 is not among the 3 class(es)" in message
    assert "labels/train/train_0002.txt:1: coordinate(s) outside [0, 1]: cx=1.25" in message
    assert "labels/train/train_0003.txt:1: not a number" in message
    report = caught.value.report
    assert report["problems"] == {
        "malformed": 2,
        "unknown_class": 1,
        "out_of_range": 1,
        "unreadable_image": 0,
        "orphan_label": 1,
    }
    assert any(
        p["file"] == "labels/train/stray.txt" and p["kind"] == "orphan_label" for p in report["listed"]
    )
    assert report["splits"]["train"]["background"] >= 1  # train_0004 counted as background

    found = read_dataset(root, bad_labels="skip")  # the images with bad lines are left out
    train = found.counts["train"]
    assert train["left_out"] == 4 and train["images"] == 4
    assert {s.image.name for s in found.splits["train"]}.isdisjoint({f"train_000{i}.jpg" for i in range(4)})


def test_data_yaml_is_checked_and_its_download_script_never_run(tmp_path):
    root = make_yolo_dataset(tmp_path / "ds", {"train": 4, "val": 2}, size=64)
    text = (root / "data.yaml").read_text()
    (root / "data.yaml").write_text(text.replace("nc: 3", "nc: 4"))
    with pytest.raises(ConfigError, match="nc is 4 but names lists 3"):
        read_dataset(root)
    marker = tmp_path / "ran"
    (root / "data.yaml").write_text(text + f"download: |\n  open('{marker}', 'w').write('x')\n")
    found = read_dataset(root)
    assert not marker.exists() and any("download key is ignored" in note for note in found.notes)
    (root / "data.yaml").write_text(text.replace("val: images/val\n", ""))
    with pytest.raises(ConfigError, match="val: the split"):
        read_dataset(root)
    (root / "images" / "val" / "val_0000.jpg").write_bytes(b"not an image")
    (root / "data.yaml").write_text(text)
    found = read_dataset(root)
    assert any(p.kind == "unreadable_image" and p.file == "images/val/val_0000.jpg" for p in found.problems)


def test_a_model_yaml_may_only_name_layer_classes(tmp_path):
    from fakefinder.tasks.object_detector.model import model_yaml

    spec = model_yaml("yolov8n.yaml")
    assert spec["scale"] == "n" and spec["backbone"][0][2] == "Conv"
    spec["backbone"][0][2] = "torch_load"  # a function the module imports, not a layer
    import yaml

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({k: v for k, v in spec.items() if k != "yaml_file"}))
    with pytest.raises(ConfigError, match="'torch_load', which is not a model layer class"):
        model_yaml(str(tmp_path / "bad.yaml"))


def test_a_model_yaml_activation_is_never_evaluated(tmp_path):
    import yaml

    from fakefinder.tasks.object_detector.model import build, model_yaml

    spec = {k: v for k, v in model_yaml("yolov8n.yaml").items() if k != "yaml_file"}
    marker = tmp_path / "ran"
    spec["activation"] = f"__import__('os').system('touch {marker}')"
    (tmp_path / "act.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="activation .* is not a torch.nn activation"):
        model_yaml(str(tmp_path / "act.yaml"))
    with pytest.raises(Exception):  # built directly, Ultralytics' safe load refuses it too
        build(spec, ["a"])
    assert not marker.exists()
    spec["activation"] = "nn.ReLU()"
    (tmp_path / "relu.yaml").write_text(yaml.safe_dump(spec))
    assert model_yaml(str(tmp_path / "relu.yaml"))["activation"] == "nn.ReLU()"


def test_only_augmentation_settings_pass_through_and_platform_datasets_are_confined(tmp_path):
    from fakefinder.tasks.object_detector.train import _arguments

    root = make_yolo_dataset(tmp_path / "ds", {"train": 4, "val": 2}, size=64)
    config = small_config(root, tmp_path / "run", 1, "object_detector.train.augment={distill_model: x.pt}")
    with pytest.raises(ConfigError, match="augment.distill_model: not an augmentation"):
        _arguments(config, tmp_path / "run", "cpu", "fp32")
    assert (
        _arguments(small_config(root, tmp_path / "run", 1), tmp_path / "run", "cpu", "fp32")["mosaic"] == 0.0
    )
    outside = make_yolo_dataset(tmp_path / "elsewhere", {"train": 2}, size=64)
    (root / "data.yaml").write_text(
        (root / "data.yaml")
        .read_text()
        .replace("train: images/train", f"train: {outside / 'images' / 'train'}")
    )
    assert read_dataset(root).counts["train"]["images"] == 2  # the CLI reads where data.yaml points
    with pytest.raises(ConfigError, match="outside the dataset folder"):
        read_dataset(root, confine=True)


def test_ultralytics_pt_weights_are_read_without_running_code(tmp_path):
    from fakefinder.tasks.object_detector.model import build, load_matching, model_yaml, start_weights

    spec = model_yaml("yolov8n.yaml")
    source = build(spec, ["a", "b"])
    torch.save(
        {"model": source.half(), "train_args": {"imgsz": 640}, "epoch": -1, "date": "x"}, tmp_path / "w.pt"
    )
    weights = start_weights(str(tmp_path / "w.pt"))
    target = build(spec, ["a", "b", "c"])  # another class count: the head's class layers stay as built
    loaded, total = load_matching(target, weights)
    assert 0 < loaded < total
    key = "model.0.conv.weight"
    assert torch.equal(target.state_dict()[key], source.state_dict()[key].float())

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"model": Payload()}, handle)
    with pytest.raises(ConfigError, match="refused to load"):
        start_weights(str(tmp_path / "evil.pt"))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# train, evaluate, predict, export


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("detector")
    dataset = make_yolo_dataset(root / "ds", {"train": 64, "val": 16}, size=64, background_every=8)
    config = small_config(dataset, root / "run", 30)
    events = []
    result = fakefinder.train(config, overwrite=True, events=events.append)
    return {"root": root, "dataset": dataset, "config": config, "result": result, "events": events}


def test_trains_from_its_preset_and_learns_the_boxes(trained):
    result, config = trained["result"], trained["config"]
    assert config.task == "object_detector" and config.object_detector.model.arch == "yolov8n.yaml"
    model = result.artifact
    meta = json.loads((model / "model.json").read_text())
    assert meta["kind"] == "object_detector" and meta["classes"] == ["square", "disc", "triangle"]
    assert meta["architecture"]["yaml"]["nc"] == 3 and meta["preprocessing"]["input_size"] == 64
    assert not list(result.output_dir.rglob("*.pt")) or all(
        p.name == "optimizer.pt" for p in result.output_dir.rglob("*.pt")
    )  # no pickled model anywhere
    assert [row["epoch"] for row in result.history] == list(range(1, 31))
    val = result.details["val"]
    assert val["overall"]["map50"] > 0.1, val  # far above an untrained model's 0
    assert set(val["per_class"]) == {"square", "disc", "triangle"}
    metrics = [e for e in trained["events"] if e.type == "metrics" and e.stage == "val"]
    assert len(metrics) == 30 and "metrics/mAP50(B)" in metrics[-1].data
    report = json.loads((result.output_dir / "label_report.json").read_text())
    assert report["splits"]["train"]["background"] == 64 // 8  # every 8th scene
    from PIL import Image

    # Ultralytics' import-time patches of process-wide functions are undone
    assert Image.open.__module__ == "PIL.Image" and torch.save.__module__ == "torch.serialization"


def test_evaluates_map_per_class_with_drawn_samples(trained):
    config = trained["config"]
    out = fakefinder.evaluate(config)
    metrics = json.loads(out.metrics_file.read_text())
    (entry,) = metrics["models"].values()
    overall = entry["overall"]
    assert 0 < overall["map50_95"] <= overall["map50"] <= 1
    # the evaluation of the artifact matches the one training made from the same best weights
    assert overall["map50"] == pytest.approx(trained["result"].details["val"]["overall"]["map50"], abs=1e-6)
    assert sum(c["instances"] for c in entry["per_class"].values()) == overall["instances"]
    page = out.report_file.read_text()
    assert "mAP@0.5:0.95" in page and f"{overall['map50']:.4f}"[:5] in page
    drawn = sorted((out.output_dir / "samples").rglob("*.png"))
    assert len(drawn) == config.object_detector.eval.samples and all(d.name in page for d in drawn)


def test_predicts_boxes_on_new_images(trained, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(123)
    truth = {}
    for i in range(6):
        image, rows = shape_scene(rng, 64)
        image.save(tmp_path / f"new_{i}.png")
        truth[f"new_{i}.png"] = rows
    config = trained["config"].model_copy(deep=True)
    config.predict.inputs = [str(tmp_path)]
    config.predict.output = str(tmp_path / "boxes.csv")
    config.object_detector.predict.conf = 0.1
    result = fakefinder.predict(config)
    rows = list(csv.DictReader(open(result.submission_path)))
    assert {r["id"] for r in rows} == set(truth)
    hits = 0
    for name, boxes in truth.items():
        mine = [r for r in rows if r["id"] == name and r["class"]]
        for c, cx, cy, w, h in boxes:
            true = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * 64
            hits += any(
                _iou(true, np.array([float(r[k]) for k in ("x1", "y1", "x2", "y2")])) > 0.5 for r in mine
            )
    assert hits >= sum(len(b) for b in truth.values()) // 2, (hits, trained["result"].details["val"])
    with Image.open(tmp_path / "new_0.png") as im:
        assert im.size == (64, 64)


def _iou(a, b):
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_exports_onnx_with_parity(trained, tmp_path):
    import onnxruntime as ort

    from fakefinder.tasks import get_task

    path = get_task("object_detector").export(trained["result"].artifact, tmp_path / "detector.onnx").path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"images": np.zeros((2, 3, 64, 64), np.float32)})
    assert output.shape[:2] == (2, 4 + 3)
    assert json.loads(path.with_suffix(".json").read_text())["classes"] == ["square", "disc", "triangle"]


# ---------------------------------------------------------------------------------------------
# resume after a kill


def test_resumes_after_a_kill(tmp_path):
    dataset = make_yolo_dataset(tmp_path / "ds", {"train": 32, "val": 8}, size=64)
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "fakefinder",
        "train",
        "-c",
        str(PRESET),
        f"object_detector.data.path={dataset}",
        f"object_detector.train.output_dir={run}",
        "object_detector.train.epochs=4",
        *SMALL,
    ]
    state = run / "checkpoints" / "last" / "state.json"
    kill_when(args, lambda: state.is_file() and json.loads(state.read_text())["epoch"] >= 1)
    killed_at = json.loads(state.read_text())["epoch"] + 1
    assert killed_at < 4 and not (run / "model").exists()
    from fakefinder.core.runlock import RunFolderError

    with pytest.raises(RunFolderError):  # a new run may not silently replace the killed one
        fakefinder.train(small_config(dataset, run, 4))
    events = []
    result = fakefinder.train(small_config(dataset, run, 4), resume=True, events=events.append)
    assert any("resuming from" in getattr(e, "message", "") for e in events)
    epochs = [int(row["epoch"]) for row in result.history]
    assert epochs == [1, 2, 3, 4]  # each epoch once, the killed one's partial work not counted twice
    assert json.loads(state.read_text())["epoch"] == 3
    assert (result.artifact / "model.json").is_file()


def test_a_detector_trained_this_way_serves_prepare_as_a_face_detector(trained):
    from fakefinder.config import FacesConfig
    from fakefinder.faces.detectors import DetectorChain

    rng = np.random.default_rng(7)
    scenes = [shape_scene(rng, 64, classes=("square",)) for _ in range(6)]
    faces = FacesConfig(
        detector="yolo",
        fallback=[],
        min_score=0.1,
        min_face_px=4,
        detector_options={"yolo": {"model": str(trained["result"].artifact), "class": "square"}},
    )
    chain = DetectorChain(faces)
    assert chain.verify() == []
    found = chain.detect([np.asarray(image) for image, _ in scenes])
    hits = 0
    for (image, rows), boxes in zip(scenes, found):
        for _, cx, cy, w, h in rows:
            true = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * 64
            hits += any(_iou(true, np.array(face.box)) > 0.5 for face in boxes)
    assert hits >= sum(len(rows) for _, rows in scenes) // 2
    wrong = FacesConfig(
        detector="yolo",
        fallback=[],
        detector_options={"yolo": {"model": str(trained["result"].artifact), "class": "face"}},
    )
    with pytest.raises(ValueError, match="'face' is not among the model's classes"):
        DetectorChain(wrong).verify()
