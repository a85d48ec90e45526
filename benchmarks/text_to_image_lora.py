"""A text-to-image LoRA trained on DFDC face crops on this CPU, with tiny random Stable Diffusion
components (no SD weights can be fetched here; the same loop runs a real base on a GPU).

Face crops from ../shared/data/dfdc-faces are captioned by their label ("a photo of a real face" /
"a photo of a deepfake face") in a scratch folder of links (never copied into the repository);
the LoRA trains from configs/sd15-lora.yaml at a CPU-sized resolution on `train` images, the held-out
loss is read on `val` while it trains, and the finished adapter is evaluated once on `test`: held-out
denoising loss with the adapter and with it at scale 0 (the base), at fixed noise and timesteps.
Reports training steps/s and images/s, peak memory (RSS), and generation time per image.

    .venv/bin/python benchmarks/text_to_image_lora.py                  # 400/100/100 crops, 64 px, 300 steps
    .venv/bin/python benchmarks/text_to_image_lora.py --steps 50       # a quick look

Writes benchmarks/results/text_to_image_lora.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "configs" / "sd15-lora.yaml"
DATA = HERE.parent.parent / "shared" / "data" / "dfdc-faces"
CAPTIONS = {"real": "a photo of a real face", "fake": "a photo of a deepfake face"}


def captioned_split(folder: Path, split: str, count: int) -> Path:
    """`count` crops of `split` (real and fake alternating, in file order) linked into `folder`,
    captioned in metadata.jsonl."""
    with open(DATA / "metadata.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split]
    by_label = {label: [r for r in rows if r["label"] == label] for label in CAPTIONS}
    chosen = [r for pair in zip(by_label["real"], by_label["fake"]) for r in pair][:count]
    folder.mkdir(parents=True)
    lines = []
    for row in chosen:
        name = Path(row["file"]).name
        (folder / name).symlink_to(DATA / row["file"])
        lines.append(json.dumps({"file_name": name, "text": CAPTIONS[row["label"]]}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "text_to_image_lora.json")
    args = parser.parse_args()
    if not (DATA / "metadata.csv").is_file():
        raise SystemExit(f"{DATA} is missing: this benchmark reads the shared dfdc-faces crops")

    import fakefinder
    from fakefinder.config import load_config

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        train = captioned_split(root / "train", "train", args.train)
        val = captioned_split(root / "val", "val", args.val)
        test = captioned_split(root / "test", "test", args.test)
        overrides = [
            f"diffusion.data.path={train}",
            f"diffusion.data.val_path={val}",
            "diffusion.model.base=random:tiny",
            f"diffusion.data.resolution={args.size}",
            f"diffusion.train.max_steps={args.steps}",
            f"diffusion.train.batch_size={args.batch}",
            "diffusion.train.accumulate=1",
            f"diffusion.train.lr={args.lr}",
            f"diffusion.train.save_steps={max(1, args.steps // 3)}",
            f"diffusion.train.eval_steps={max(1, args.steps // 3)}",
            "diffusion.sample.steps=25",
            "diffusion.sample.prompts=[a photo of a real face,a photo of a deepfake face]",
            "diffusion.eval.timesteps=10",
            f"diffusion.train.output_dir={root / 'run'}",
            f"evaluate.output_dir={root / 'eval'}",
            "evaluate.batch_size=16",
        ]
        config = load_config(CONFIG, overrides)
        seen = []
        started = time.perf_counter()
        result = fakefinder.train(config, overwrite=True, events=seen.append)
        train_s = time.perf_counter() - started
        val_curve = [
            {"step": e.data["step"], "val_loss": round(e.data["val_loss"], 5)}
            for e in seen
            if e.type == "metrics" and e.data.get("val_loss") is not None
        ]
        evaluated = fakefinder.evaluate(load_config(CONFIG, overrides + [f"diffusion.data.test_path={test}"]))
        (tested,) = evaluated.metrics["models"].values()
        from fakefinder.tasks import read_model
        from fakefinder.tasks.text_to_image_lora.predict import ImageGenerator

        generator = ImageGenerator(read_model(result.artifact), __import__("torch").device("cpu"), config)
        generator.generate("a photo of a real face", 0)  # warm-up
        began = time.perf_counter()
        for seed in range(5):
            generator.generate("a photo of a deepfake face", seed)
        per_image = (time.perf_counter() - began) / 5
    report = {
        "command": "benchmarks/text_to_image_lora.py "
        f"--train {args.train} --val {args.val} --test {args.test} --size {args.size} --steps {args.steps} "
        f"--batch {args.batch} --lr {args.lr}",
        "base": "random:tiny (UNet 16/32 channels, 2x VAE, 2-layer CLIP text encoder)",
        "steps": result.steps,
        "train_seconds": round(train_s, 1),
        "steps_per_second": round(result.steps / result.seconds, 2),
        "train_images_per_second": round(
            result.details["images_per_second"], 1
        ),  # steps only (no samples, eval, checkpoints)
        "side_seconds": round(result.details["side_seconds"], 1),
        "trainable_parameters": result.details["parameters"]["trainable"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "val_loss_during_training": val_curve,
        "val_loss_final": result.details["eval"]["val_loss"],
        "test": {k: tested[k] for k in ("images", "timesteps", "loss", "base_loss", "loss_change")},
        "generate_seconds_per_image": round(per_image, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
