"""Mean squared error of each model on toy_test.csv: metrics.json and report.html."""

from __future__ import annotations

from pathlib import Path

from fakefinder.config import Config
from fakefinder.core.files import atomic_write_json, atomic_write_text
from fakefinder.core.results import EvalSummary
from fakefinder.tasks.registry import read_model
from toy_regressor.data import read


def evaluate(config: Config, models: list[Path], events=None) -> EvalSummary:
    xs, ys = read(Path(config.toy.data or ".") / "toy_test.csv")
    out = Path(config.evaluate.output_dir)
    metrics = {"kind": config.task, "models": {}}
    for path in models:
        weights = read_model(path).weights()
        a, b = float(weights["a"]), float(weights["b"])
        metrics["models"][Path(path).parent.name] = {
            "mse": sum((a * x + b - y) ** 2 for x, y in zip(xs, ys)) / len(xs),
            "n": len(xs),
        }
    metrics_file = atomic_write_json(out / "metrics.json", metrics)
    report = atomic_write_text(out / "report.html", f"<html><body><pre>{metrics}</pre></body></html>")
    return EvalSummary(config.task, out, metrics, metrics_file, report)
