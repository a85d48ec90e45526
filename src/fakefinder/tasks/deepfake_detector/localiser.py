"""How well a detector's heatmaps say where a fake was changed, and how faithful they are to its
decision, measured on fakes with a true mask (`fakefinder.faces.truth`) beside the two baselines
scored the same way: a centred Gaussian face prior and a random map.

Per fake: the pointing game, the pixel AUC and the IoU at the threshold fitted on validation; and
the deletion drop (the fall in the fake probability when the map's top k % of pixels are removed,
restored from the source crop where there is one, else filled with the crop's mean colour) for each
k in `FRACTIONS`. Summaries: the means overall and by the true mask's area, and the ratios of the
map's deletion drop to the baselines'.

A model's heatmaps are offered as evidence only when, on validation, they beat the face prior on the
pointing game and the pixel AUC (`validate`, recorded in the artifact's `localiser.json`); otherwise
the report and the UI call them experimental.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fakefinder.engine import localisation as loc

FRACTIONS = (0.05, 0.1, 0.2)
MAPS = ("map", "face_prior", "random")  # the model's map and the two baselines
AREA_BINS = ((0.0, 0.1, "<10%"), (0.1, 0.25, "10-25%"), (0.25, 1.01, ">=25%"))
IOU_GRID = tuple(round(t, 2) for t in np.arange(0.1, 0.95, 0.05))
CHUNK = 32


Draw = Callable[[list[np.ndarray], list[int]], list[np.ndarray]]  # (crops, their row numbers) -> maps
BASELINES = ("face_prior", "random")


def measure(
    detector,
    rows: pd.DataFrame,
    root: Path,
    draws: dict[str, Draw] | None = None,
    limit: int | None = 300,
    iou_thresholds: tuple[float, ...] = (0.5,),
    deletion: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """One row per fake of `rows` with a true mask (at most `limit` fakes looked at): its mask's area
    and, for each map (`draws`: name -> drawer, default {"map": the detector's own heatmaps}) and each
    baseline, every figure as column `<map>:<figure>` (`iou_<t>` for each of `iou_thresholds`); and
    the count of fakes left out, by reason."""
    from fakefinder.faces.truth import manifest_truths
    from fakefinder.tasks.classification.scoring import crop_heatmaps, score_pixels

    size = detector.info["image_size"]
    truths = manifest_truths(rows, root, size, limit)
    usable = {i: t for i, t in truths.items() if t.mask is not None}
    left_out: dict[str, int] = {}
    for truth in truths.values():
        if truth.mask is None:
            left_out[truth.origin] = left_out.get(truth.origin, 0) + 1
    draws = draws or {"map": lambda crops, _: crop_heatmaps(detector, crops)}
    frame = rows.reset_index(drop=True)
    prior = loc.face_prior(size, size)
    records = []
    indices = sorted(usable)
    for start in range(0, len(indices), CHUNK):
        chunk = indices[start : start + CHUNK]
        crops = [usable[i].image for i in chunk]
        drawn = {name: draw(crops, chunk) for name, draw in draws.items()}
        altered, keys = [], []
        for n, (i, crop) in enumerate(zip(chunk, crops)):
            truth = usable[i]
            candidates = {name: maps[n] for name, maps in drawn.items()}
            candidates.update(face_prior=prior, random=loc.random_map(size, size, seed=i))
            record = {
                "row": i,
                "path": frame.path.iloc[i],
                "area": float(truth.mask.mean()),
                "origin": truth.origin,
            }
            for name, values in candidates.items():
                record[f"{name}:pointing"] = loc.pointing_game(values, truth.mask)
                record[f"{name}:pixel_auc"] = loc.pixel_auc(values, truth.mask)
                for t in iou_thresholds:
                    record[f"{name}:iou_{t:g}"] = loc.iou_at(values, truth.mask, t)
                for k in FRACTIONS if deletion else ():
                    altered.append(loc.remove(crop, loc.top_fraction(values, k), truth.source))
                    keys.append((len(records), f"{name}:drop_{k:g}"))
            records.append(record)
        if altered:
            first = len(records) - len(chunk)
            base = score_pixels(detector, crops)
            for r in range(first, len(records)):
                records[r]["score"] = float(base[r - first])
            for (r, key), score in zip(keys, score_pixels(detector, altered)):
                records[r][key] = float(base[r - first] - score)
    return pd.DataFrame(records), left_out


def _means(table: pd.DataFrame) -> dict:
    names = list(dict.fromkeys(c.split(":")[0] for c in table.columns if ":" in c))
    out = {}
    for name in names:
        figures = {}
        for column in [c for c in table.columns if c.startswith(f"{name}:")]:
            values = pd.to_numeric(table[column], errors="coerce").dropna()
            figures[column.split(":", 1)[1]] = float(values.mean()) if len(values) else None
        out[name] = figures
    ratios = {}
    for name in (n for n in names if n not in BASELINES):
        for k in FRACTIONS:
            drop = out[name].get(f"drop_{k:g}")
            for base in BASELINES:
                other = out[base].get(f"drop_{k:g}")
                if drop is not None and other not in (None, 0):
                    prefix = "" if name == "map" else f"{name}_"
                    ratios[f"{prefix}drop_{k:g}_vs_{base}"] = drop / other
    out["ratios"] = ratios
    out["n"] = len(table)
    return out


def summarise(table: pd.DataFrame) -> dict:
    """Means of every figure for the map and the baselines, overall and by the true mask's area."""
    summary = {"overall": _means(table) if len(table) else {"n": 0}, "by_area": {}}
    for low, high, name in AREA_BINS:
        part = table[(table.area >= low) & (table.area < high)] if len(table) else table
        summary["by_area"][name] = _means(part) if len(part) else {"n": 0}
    return summary


def beats_prior(overall: dict) -> bool:
    """The map points inside the change more often than the face prior and ranks its pixels better."""
    mine, prior = overall.get("map", {}), overall.get("face_prior", {})
    keys = ("pointing", "pixel_auc")
    if any(mine.get(k) is None or prior.get(k) is None for k in keys):
        return False
    return all(mine[k] > prior[k] for k in keys)


def validate(
    detector,
    rows: pd.DataFrame,
    root: Path,
    method: str = "auto",
    limit: int = 300,
    smooth: float | None = None,
) -> dict:
    """The localiser's record on validation rows: the IoU threshold fitted there (the best mean IoU
    of the map), every figure beside the baselines, and whether its maps beat the face prior (then
    they are offered as evidence)."""
    from fakefinder.tasks.classification.heatmaps import method_of
    from fakefinder.tasks.classification.scoring import crop_heatmaps

    if smooth is not None:
        detector.heatmap_smooth = smooth
    draws = {"map": lambda crops, _: crop_heatmaps(detector, crops, method)}
    table, left_out = measure(detector, rows, root, draws, limit, IOU_GRID, deletion=False)
    record = {"method": method_of(detector.model, method), "fakes": int(len(table)), "left_out": left_out}
    record["smooth"] = detector.heatmap_smooth
    if not len(table):
        return {**record, "iou_threshold": 0.5, "validation": {}, "beats_prior": False}
    threshold = max(IOU_GRID, key=lambda t: (table[f"map:iou_{t:g}"].mean(), -t))
    keep = [c for c in table.columns if ":iou_" not in c or c.endswith(f":iou_{threshold:g}")]
    overall = summarise(table[keep])["overall"]
    return {
        **record,
        "iou_threshold": float(threshold),
        "validation": clean({k: overall.get(k) for k in MAPS}),
        "beats_prior": beats_prior(overall),
    }


def clean(value):
    """NaN-free plain values for JSON."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
