"""The end-to-end demo: generate small datasets in their published layouts, then run the pipeline.

Everything it needs is generated from the real face photo that scikit-image ships.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from fakefinder.config import config_from_dict
from fakefinder.data import synthetic
from fakefinder.data.prepare import prepare


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


def run_demo(output: Path, workers: int = 2) -> None:
    console = Console()
    output = Path(output)
    console.rule("[bold]fakefinder demo")
    console.print(f"1/1 generating FF++- and DFDC-shaped datasets under {output / 'data'}")
    data = make_demo_data(output / "data")
    config = config_from_dict(
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
        },
        source="demo",
    )
    console.rule("[bold]prepare")
    result = prepare(config, console=console)
    console.rule("[bold]done")
    console.print(f"manifest: {result.manifest_path}")
    console.print(f"summary:  {result.summary_path}")
