"""YOLOv8n (built from its YAML, no pretrained weights) trained on generated shape scenes on this CPU.

A YOLO dataset of squares, discs and triangles with known boxes is written (train / val / test),
the detector trains from configs/yolo-detector.yaml at a CPU-sized resolution, model selection and
early stopping read val only, and the finished artifact is evaluated once on test. Reports training
images/s, peak memory (RSS), val and test mAP@0.5 and mAP@0.5:0.95 (per class on test), and predict
latency per image.

    .venv/bin/python benchmarks/object_detector.py                       # 400/80/80 scenes, 128 px, 30 epochs
    .venv/bin/python benchmarks/object_detector.py --epochs 5 --train 100  # a quick look

Writes benchmarks/results/object_detector.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "configs" / "yolo-detector.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=80)
    parser.add_argument("--test", type=int, default=80)
    parser.add_argument("--size", type=int, default=128, help="scene and training image size")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "object_detector.json")
    args = parser.parse_args()

    import fakefinder
    from fakefinder.config import load_config
    from fakefinder.synthetic import make_yolo_dataset

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        dataset = make_yolo_dataset(
            root / "shapes",
            {"train": args.train, "val": args.val, "test": args.test},
            size=args.size,
            seed=1,
            background_every=10,
        )
        overrides = [
            f"object_detector.data.path={dataset}",
            f"object_detector.train.output_dir={root / 'run'}",
            f"object_detector.train.epochs={args.epochs}",
            f"object_detector.train.imgsz={args.size}",
            f"object_detector.train.batch_size={args.batch}",
            "object_detector.train.num_workers=0",
            f"evaluate.output_dir={root / 'eval'}",
            "evaluate.batch_size=16",
        ]
        config = load_config(CONFIG, overrides)
        started = time.perf_counter()
        result = fakefinder.train(config, overwrite=True)
        train_s = time.perf_counter() - started
        test_config = load_config(CONFIG, overrides + ["object_detector.eval.split=test"])
        evaluated = fakefinder.evaluate(test_config)
        (test,) = evaluated.metrics["models"].values()
        from fakefinder.tasks import read_model
        from fakefinder.tasks.object_detector.predict import BoxPredictor

        predictor = BoxPredictor(read_model(result.artifact), "cpu")
        images = sorted((dataset / "images" / "test").glob("*.jpg"))[:40]
        predictor.boxes(images[:2])  # warm-up
        began = time.perf_counter()
        for image in images:
            predictor.boxes([image])
        latency = (time.perf_counter() - began) / len(images)
    report = {
        "command": f"benchmarks/object_detector.py --train {args.train} --val {args.val} --test {args.test} "
        f"--size {args.size} --epochs {args.epochs} --batch {args.batch}",
        "model": "yolov8n.yaml (random init)",
        "epochs": args.epochs,
        "train_seconds": round(train_s, 1),
        "train_images_per_second": round(args.train * args.epochs / train_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "val": result.details["val"]["overall"],
        "test": test["overall"],
        "test_per_class": test["per_class"],
        "predict_ms_per_image": round(latency * 1000, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
