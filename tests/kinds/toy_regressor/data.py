"""The toy dataset: a folder with toy_train.csv (and toy_test.csv), columns x and y."""

from __future__ import annotations

import csv
from pathlib import Path

from fakefinder.config import ConfigError


def read(path: Path) -> tuple[list[float], list[float]]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return [float(r["x"]) for r in rows], [float(r["y"]) for r in rows]
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: columns x and y of numbers ({exc})") from None


def write(folder: Path, a: float = 2.0, b: float = -1.0, count: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, start in (("toy_train.csv", 0), ("toy_test.csv", count)):
        with (folder / name).open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["x", "y"])
            for i in range(start, start + count):
                x = (i % 20) / 10 - 1
                out.writerow([x, a * x + b])
    return folder


def describe(path: Path) -> dict | None:
    if not (path / "toy_train.csv").is_file():
        return None
    splits = {}
    for split in ("train", "test"):
        if (path / f"toy_{split}.csv").is_file():
            splits[split] = {"rows": len(read(path / f"toy_{split}.csv")[0])}
    return {"layout": "toy_csv", "splits": splits, "note": "", "usable": True}
