"""Accuracy benchmark on the shared DFDC face crops: train on `train`, select on `val`, report `test`.

    .venv/bin/python benchmarks/dfdc_faces.py                      # the CPU preset (~40 min)
    .venv/bin/python benchmarks/dfdc_faces.py train.epochs=1       # any config override

Prints AUC, macro-F1 at the threshold fitted on val, accuracy and wall times; writes
benchmarks/results/dfdc_faces.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import fakefinder
from fakefinder.config import load_config
from fakefinder.engine.metrics import binary_metrics
from fakefinder.faces.manifest import read_manifest, select_rows
from fakefinder.tasks.classification.scoring import load_detector, score_crops

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(HERE.parent / "configs" / "dfdc-faces-cpu.yaml"))
    parser.add_argument("--results", default=str(HERE / "results" / "dfdc_faces.json"))
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="skip training: score the run's existing model artifact (e.g. after an interrupted run)",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    config = load_config(args.config, args.overrides)
    root = config.data.datasets[0].root
    if not (root / "metadata.csv").is_file():
        print(f"the benchmark data is missing: {root}/metadata.csv (expected ../shared/data/dfdc-faces)")
        return 2
    from fakefinder.render import RichRenderer

    events = RichRenderer()
    started = time.perf_counter()
    prepared = fakefinder.prepare(config, progress=False, events=events)
    prepare_seconds = time.perf_counter() - started

    started = time.perf_counter()
    if args.score_only:
        from fakefinder.core.checkpoint import load_checkpoint
        from fakefinder.core.results import TrainSummary

        run = Path(config.train.output_dir)
        state = load_checkpoint(run / "last.pt")
        result = TrainSummary(
            config.task,
            run,
            run / "model",
            "scored only",
            "",
            state["best_metric"],
            state["best_epoch"],
            state["epoch"],
            state["global_step"],
            None,
            state["history"],
        )
    else:
        result = fakefinder.train(config, events=events, overwrite=True)  # the benchmark's own run folder
    train_seconds = time.perf_counter() - started

    detector = load_detector(result.artifact)
    manifest = read_manifest(prepared.manifest_path)
    test = select_rows(manifest, "test", None)
    started = time.perf_counter()
    scores = score_crops(detector, test, Path(manifest.attrs["root"]), num_workers=config.train.num_workers)
    score_seconds = time.perf_counter() - started
    labels = (test.label == "fake").astype(int).to_numpy()
    test_metrics = binary_metrics(labels, scores, detector.threshold)

    report = {
        "config": args.config,
        "overrides": args.overrides,
        "model": config.model.name,
        "epochs_run": len(result.history),
        "train_seconds_per_epoch": [round(r["epoch_seconds"]) for r in result.history],
        "best_epoch": result.best_epoch,
        "threshold_from_val": detector.threshold,
        "val_at_best": next(r for r in result.history if r["epoch"] == result.best_epoch),
        "test": {k: test_metrics[k] for k in ("n", "auc", "macro_f1", "accuracy", "eer", "ap", "confusion")},
        "seconds": {
            "prepare": round(prepare_seconds, 1),
            "train": round(train_seconds, 1),
            "score_test": round(score_seconds, 1),
        },
        "artifact": str(result.artifact),
    }
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    t = report["test"]
    print(
        f"\ndfdc-faces test ({t['n']} crops, unseen groups), model selected on val (epoch "
        f"{result.best_epoch}):"
    )
    print(
        f"  AUC {t['auc']:.4f} | macro-F1 {t['macro_f1']:.4f} at val threshold {detector.threshold:.3f} | "
        f"accuracy {t['accuracy']:.4f} | EER {t['eer']:.4f}"
    )
    print(
        f"  wall time: train {train_seconds / 60:.1f} min, prepare {prepare_seconds:.0f} s, score test "
        f"{score_seconds:.0f} s"
    )
    print(f"  results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
