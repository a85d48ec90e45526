"""Tiny datasets for trying the platform (`fakefinder serve --demo-data`): each kind's own
(`Kind.demo_datasets`), written once into the datasets root."""

from __future__ import annotations

import shutil
from pathlib import Path


def demo_datasets() -> dict:
    """name -> writer(folder), over every registered kind (a name two kinds share is written once)."""
    from fakefinder.tasks import kinds

    found: dict = {}
    for kind in kinds():
        for name, write in kind.demo_datasets().items():
            found.setdefault(name, write)
    return found


def write_demo_datasets(root: Path) -> dict[str, Path]:
    """Each demo dataset into `root/<name>` (one that is there already is kept)."""
    root = Path(root)
    written = {}
    for name, write in demo_datasets().items():
        folder = root / name
        if not folder.exists():
            staging = root / f".demo-{name}"
            shutil.rmtree(staging, ignore_errors=True)  # a write cut off earlier
            write(staging)
            staging.rename(folder)
        written[name] = folder
    return written
