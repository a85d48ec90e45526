"""Where: how well a trained detector's heatmaps localise the change in DFDC fakes, and how faithful
they are to its decision, on the shared DFDC face crops (true masks: each fake's difference to its
aligned source crop; misaligned pairs dropped, `fakefinder.faces.truth`).

    .venv/bin/python benchmarks/evidence.py                       # the dfdc-faces-cpu preset's model
    .venv/bin/python benchmarks/evidence.py --model PATH/model    # any detector artifact

1. The localiser is chosen on **val**: the mask head refitted on frozen features at strides 8 and 16
   (training fakes), the mask head as trained, and a class-activation map; each map's IoU threshold
   is fitted there too.
2. The **test** split is read once: pointing game, pixel AUC, IoU and deletion drops (top 5/10/20 %
   restored from the source crop) for the chosen localiser, the mask head as trained, the CAM, a
   centred face prior and a random map, overall and by the true mask's area.

Prints the tables and each map's cost per crop; writes benchmarks/results/evidence.json and the
chosen artifact beside the model (`<model>-localised`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIGURES = ("pointing", "pixel_auc", "iou", "drop_0.05", "drop_0.1", "drop_0.2")


def fitted_thresholds(table, names) -> dict[str, float]:
    """Per map, the IoU threshold with the best mean IoU on validation."""
    from fakefinder.tasks.deepfake_detector.localiser import IOU_GRID

    return {name: max(IOU_GRID, key=lambda t: (table[f"{name}:iou_{t:g}"].mean(), -t)) for name in names}


def rows_for(summary: dict, thresholds: dict) -> list[dict]:
    out = []
    for area, part in [("all", summary["overall"]), *summary["by_area"].items()]:
        for name, t in thresholds.items():
            if not part.get("n"):
                continue
            figures = dict(part[name])
            figures["iou"] = figures.pop(f"iou_{t:g}", None)
            out.append({"area": area, "map": name, "n": part["n"], **{k: figures.get(k) for k in FIGURES}})
    return out


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'area':>7} {'map':>22} {'n':>4} " + " ".join(f"{k:>9}" for k in FIGURES))
    for r in rows:
        cells = " ".join(f"{r[k]:9.3f}" if r.get(k) is not None else f"{'-':>9}" for k in FIGURES)
        print(f"{r['area']:>7} {r['map']:>22} {r['n']:>4} {cells}")


def cost_per_crop(draws: dict, crops: list) -> dict[str, float]:
    out = {}
    for name, draw in draws.items():
        draw(crops[:4], None)  # warm up
        started = time.perf_counter()
        draw(crops, None)
        out[name] = 1000 * (time.perf_counter() - started) / len(crops)
    return out


def load(args):
    """The config's prepared manifest split three ways, and the detector."""
    import fakefinder
    from fakefinder.config import load_config
    from fakefinder.faces.manifest import read_manifest, select_rows
    from fakefinder.tasks.classification.scoring import load_detector

    config = load_config(args.config)
    root = config.data.datasets[0].root
    if not (root / "metadata.csv").is_file():
        raise SystemExit(
            f"the benchmark data is missing: {root}/metadata.csv (expected ../shared/data/dfdc-faces)"
        )
    model = Path(args.model or Path(config.train.output_dir) / "model")
    if not (model / "model.json").is_file():
        raise SystemExit(
            f"no trained model at {model}: train the preset first (fakefinder train -c {args.config})"
        )
    manifest = read_manifest(fakefinder.prepare(config, progress=False).manifest_path)
    splits = {split: select_rows(manifest, split, None) for split in ("train", "val", "test")}
    return model, load_detector(model), Path(manifest.attrs["root"]), splits


def choose_on_validation(model, detector, root, splits, limit):
    """Refit candidates on train, the choice and every map's IoU threshold on val; the chosen artifact."""
    from fakefinder.tasks.classification.heatmaps import write_record
    from fakefinder.tasks.classification.scoring import load_detector
    from fakefinder.tasks.deepfake_detector.localiser import IOU_GRID, summarise, validate
    from fakefinder.tasks.deepfake_detector.refit import candidates, choose, save_choice

    started = time.perf_counter()
    options = candidates(detector, splits["train"], root, limit=limit)
    fit_s = time.perf_counter() - started
    choice = choose(detector, options, splits["val"], root, limit or 10_000, IOU_GRID)
    chosen_path = save_choice(detector, choice, model.parent / f"{model.name}-localised")
    method = "cam" if choice.name == "cam" else "auto"
    record = validate(load_detector(chosen_path), splits["val"], root, method, smooth=choice.smooth)
    write_record(chosen_path, record)
    names = list(dict.fromkeys(c.split(":")[0] for c in choice.table.columns if ":" in c))
    thresholds = fitted_thresholds(choice.table, names)
    print(f"validation: {choice.fakes} fakes with a true mask; chosen: {choice.name}, blur {choice.smooth:g}")
    val_rows = rows_for(summarise(choice.table), thresholds)
    shown = [r for r in val_rows if r["map"].endswith("~0") or r["map"] in ("face_prior", "random")]
    shown += [r for r in val_rows if r["map"] == f"{choice.name}~{choice.smooth:g}" and r not in shown]
    print_table("validation (unblurred candidates, the chosen one, the baselines)", shown)
    return options, choice, chosen_path, thresholds, val_rows, fit_s


def test_once(detector, root, splits, options, choice, thresholds, limit):
    """The test split, read once: the chosen localiser, the head as trained, the CAM, the baselines."""
    from fakefinder.media.images import load_rgb
    from fakefinder.tasks.classification.scoring import use_onnxruntime
    from fakefinder.tasks.deepfake_detector.localiser import measure, summarise
    from fakefinder.tasks.deepfake_detector.refit import drawers

    test_options = {"chosen": options[choice.name], "cam": None}
    picked = {"chosen": thresholds[f"{choice.name}~{choice.smooth:g}"], "cam": thresholds["cam~0"]}
    if "as_trained" in options:
        test_options["mask_as_trained"] = options["as_trained"]
        picked["mask_as_trained"] = thresholds["as_trained~0"]
    picked.update(face_prior=thresholds["face_prior"], random=thresholds["random"])
    draws = drawers(detector, test_options, {"chosen": choice.smooth})
    use_onnxruntime(detector)  # deletion re-scores many crops: the fast backend, checked against PyTorch
    started = time.perf_counter()
    table, left_out = measure(
        detector, splits["test"], root, draws, limit or 10_000, tuple(sorted(set(picked.values())))
    )
    test_s = time.perf_counter() - started
    summary = summarise(table)
    rows = rows_for(summary, picked)
    print(f"\ntest: {len(table)} fakes with a true mask; left out {left_out}")
    print_table("test (read once)", rows)
    ratios = summary["overall"]["ratios"]
    print("\ndeletion ratios (test):", json.dumps({k: round(v, 3) for k, v in ratios.items()}))
    sample = [load_rgb(root / p, detector.info["image_size"]) for p in splits["test"].path[:32]]
    costs = cost_per_crop(draws, sample)
    print("heatmap cost per crop (ms, mirrored as scored):", {k: round(v, 1) for k, v in costs.items()})
    return summary, rows, picked, left_out, costs, test_s, len(table)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(HERE.parent / "configs" / "dfdc-faces-cpu.yaml"))
    parser.add_argument("--model", default=None, help="default: <train.output_dir>/model of the config")
    parser.add_argument("--results", default=str(HERE / "results" / "evidence.json"))
    parser.add_argument("--limit", type=int, default=None, help="at most this many fakes per split")
    parser.add_argument("--val-only", action="store_true", help="stop after the choice on val (test unread)")
    args = parser.parse_args()
    from fakefinder.tasks.deepfake_detector.localiser import clean

    model, detector, root, splits = load(args)
    options, choice, chosen_path, thresholds, val_rows, fit_s = choose_on_validation(
        model, detector, root, splits, args.limit
    )
    if args.val_only:
        return 0
    summary, rows, picked, left_out, costs, test_s, fakes = test_once(
        detector, root, splits, options, choice, thresholds, args.limit
    )
    overall = summary["overall"]
    verdict = {
        f"{k}_above_prior": overall["chosen"][k] - overall["face_prior"][k]
        for k in ("pointing", "pixel_auc", "drop_0.1")
    }
    print("chosen vs face prior (test):", {k: round(v, 3) for k, v in verdict.items()})
    result = {
        "model": str(model),
        "chosen": choice.name,
        "chosen_blur": choice.smooth,
        "chosen_artifact": str(chosen_path),
        "validation": {"fakes": choice.fakes, "rows": val_rows},
        "iou_thresholds": picked,
        "test": {"fakes": fakes, "left_out": left_out, "rows": rows, "ratios": overall["ratios"]},
        "vs_prior": verdict,
        "ms_per_crop": costs,
        "seconds": {"refit_features_and_fit": fit_s, "test": test_s},
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(clean(result), indent=1))
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
