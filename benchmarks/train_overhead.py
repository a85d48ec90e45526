"""Trainer overhead: time per optimizer step of `fakefinder train` vs a bare PyTorch loop on the
same model, batch and data, and the share of step time spent waiting for data.

    .venv/bin/python benchmarks/train_overhead.py [--model efficientnet_lite0] [--size 128] [--batch 16]

Both loops read the same generated crops through the same dataset and loader settings; the
trainer runs with its defaults for logging (TensorBoard, per-step progress, history, plots).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fakefinder import synthetic
from fakefinder.config import config_from_dict
from fakefinder.tasks.classification.data import CropDataset, opencv_single_threaded
from fakefinder.tasks.classification.model import create

HERE = Path(__file__).resolve().parent


def make_data(root: Path, count: int, size: int) -> Path:
    rows = []
    for i in range(count):
        label = "fake" if i % 2 else "real"
        rel = f"crops/{i:05d}.jpg"
        (root / "crops").mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic.identity_face(i // 2, fake=label == "fake")).resize((size, size)).save(
            root / rel
        )
        rows.append(
            {"dataset": "bench", "label": label, "split": "train" if i < count * 0.8 else "val", "path": rel}
        )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def bare_loop(manifest: Path, args) -> dict:
    """What a user would write by hand: loader, model, AdamW, BCE, backward, step."""
    torch.manual_seed(0)
    frame = pd.read_csv(manifest)
    rows = frame[frame.split == "train"].reset_index(drop=True)
    model = create(args.model, pretrained=False, dropout=0.2)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    cfg = model.pretrained_cfg
    dataset = CropDataset(
        rows, manifest.parent, args.size, cfg.get("mean", (0.5,) * 3), cfg.get("std", (0.5,) * 3)
    )
    generator = np.random.default_rng(0)
    keys = [
        (int(i), int(s))
        for i, s in zip(
            generator.integers(0, len(rows), args.steps * args.batch),
            generator.integers(0, 2**62, args.steps * args.batch),
        )
    ]
    loader = DataLoader(
        dataset, batch_size=args.batch, sampler=keys, num_workers=args.workers, drop_last=True
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    model.train()
    times, waits = [], []
    with opencv_single_threaded():  # as the trainer starts its loaders
        batches = iter(loader)
    for step in range(args.steps):
        t0 = time.perf_counter()
        images, labels = next(batches)
        t1 = time.perf_counter()
        if args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        times.append(time.perf_counter() - t0)
        waits.append(t1 - t0)
    skip = args.warmup
    return {
        "step_s": float(np.mean(times[skip:])),
        "data_wait_pct": 100 * sum(waits[skip:]) / sum(times[skip:]),
    }


def trainer_loop(manifest: Path, out: Path, args) -> dict:
    config = config_from_dict(
        {
            "model": {"name": args.model, "pretrained": False, "dropout": 0.2, "image_size": args.size},
            "augment": {"enabled": False},
            "train": {
                "manifest": str(manifest),
                "output_dir": str(out),
                "epochs": 1,
                "batch_size": args.batch,
                "epoch_size": args.steps * args.batch,
                "num_workers": args.workers,
                "channels_last": args.channels_last,
                "sampler": "shuffle",
                "warmup_epochs": 0,
                "ema": None,
                "grad_clip": 1.0,
                "val_max_samples": args.batch,
            },
        }
    )
    # per-step timings come from the trainer's own TensorBoard-free hook: wrap the optimizer step
    from fakefinder.engine.run import Run
    from fakefinder.tasks import get_task
    from fakefinder.tasks.classification.train import RUN_FILES, Trainer
    from fakefinder.tasks.deepfake_detector.data import train_data

    stamps = []
    with Run(get_task(config.task), config, RUN_FILES, "a training run", overwrite=True) as run:
        trainer = Trainer(run, train_data(config))
        trainer.setup()
        original_step = trainer.optimizer.step

        def timed_step(*a, **k):
            result = original_step(*a, **k)
            stamps.append(time.perf_counter())
            return result

        trainer.optimizer.step = timed_step
        result = trainer.fit()
    steps = np.diff(stamps)[args.warmup - 1 :]
    return {"step_s": float(np.mean(steps)), "data_wait_pct": result.history[-1]["data_wait_pct"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternate bare/trainer runs this many times")
    parser.add_argument("--channels-last", action="store_true", default=True)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_data(Path(tmp), args.batch * 12, args.size)
        bare, ours = [], []
        for repeat in range(args.repeats):  # alternate, so drift in machine load hits both alike
            bare.append(bare_loop(manifest, args))
            ours.append(trainer_loop(manifest, Path(tmp) / f"run{repeat}", args))
    bare_step = float(np.median([b["step_s"] for b in bare]))
    our_step = float(np.median([o["step_s"] for o in ours]))
    report = {
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "workers": args.workers,
        "bare_step_s": bare_step,
        "trainer_step_s": our_step,
        "overhead_pct": 100 * (our_step / bare_step - 1),
        "bare_data_wait_pct": float(np.median([b["data_wait_pct"] for b in bare])),
        "trainer_data_wait_pct": float(np.median([o["data_wait_pct"] for o in ours])),
        "runs": {"bare": bare, "trainer": ours},
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "train_overhead.json").write_text(json.dumps(report, indent=1))
    print(
        f"\n{args.model} {args.size}px batch {args.batch}, {args.workers} loader workers, {args.steps} steps "
        f"x {args.repeats}:"
    )
    print(
        f"  bare PyTorch loop : {bare_step * 1000:.0f} ms/step (data wait "
        f"{report['bare_data_wait_pct']:.1f}%)"
    )
    print(
        f"  fakefinder trainer: {our_step * 1000:.0f} ms/step (data wait "
        f"{report['trainer_data_wait_pct']:.1f}%)"
    )
    print(f"  overhead: {report['overhead_pct']:+.1f}%  (target: within 5%)")


if __name__ == "__main__":
    main()
