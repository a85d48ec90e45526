"""The true manipulation mask of a fake face crop, defined once (and frozen before any localiser was
tuned, on validation pairs only):

- a fake with its **own source frame** (the real video it was made from, as the dataset records it
  in `source_video_id`, at the same frame and face; a DFDC-style dataset whose identity group holds
  a single real video records that video): the smoothed difference to the source crop
  (`difference_mask`) at `TRUTH_LEVEL`, **dropped when the pair is misaligned** (more than
  `MAX_BORDER_CHANGE` of the crop's outer band differs: a face swap leaves the background alone, so
  a changed border means the two crops were cut differently);
- a fake whose dataset ships masks (FF++'s `masks/` videos, read by `prepare` into `mask_path`):
  that mask;
- a self-blended pseudo-fake (SBI): its blend mask, at `TRUTH_LEVEL`.

Pairing never falls back to "any real of the identity group": FF++ groups merge the target's and the
source's identities, and a real of the wrong one is no source at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TRUTH_LEVEL = 0.5  # a pixel is changed where the soft mask reaches this (the difference: ~7.5 of 255)
BORDER = 0.1  # the outer band checked for alignment, as a fraction of the crop's side
MAX_BORDER_CHANGE = 0.2  # more changed than this in the band: the pair is misaligned
MIN_AREA = 0.01  # a "fake" changed on less than 1 % of its crop shows no visible change to locate


def difference_mask(fake: np.ndarray, real: np.ndarray, low: float = 3.0, high: float = 12.0) -> np.ndarray:
    """Where a fake differs from the real crop it was made from (aligned, same size): the mean
    absolute RGB difference, smoothed (compression noise averages out), mapped linearly from
    `low` (0) to `high` (1). float32 HxW in [0, 1]."""
    import cv2

    if fake.shape != real.shape:
        raise ValueError(f"a difference mask needs crops of one size, got {fake.shape} and {real.shape}")
    diff = np.abs(fake.astype(np.float32) - real.astype(np.float32)).mean(axis=2)
    diff = cv2.GaussianBlur(diff, (0, 0), sigmaX=max(1.0, 0.02 * min(diff.shape)))
    return np.clip((diff - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def border_change(mask: np.ndarray) -> float:
    """The share of the crop's outer band (`BORDER` of its side) the binary mask covers."""
    height, width = mask.shape
    band = np.ones(mask.shape, bool)
    dy, dx = max(1, round(BORDER * height)), max(1, round(BORDER * width))
    band[dy:-dy, dx:-dx] = False
    return float(mask[band].mean())


def source_partners(rows: pd.DataFrame) -> np.ndarray:
    """For each row, the row number of its source crop (-1 for reals and for fakes without one): the
    real crop of the fake's recorded source video (`source_video_id`) at the same frame and face
    index; without a recorded source, the real crop of the identity group's only real video at the
    same frame and face (its only crop when the group's real has one)."""
    partners = np.full(len(rows), -1, dtype=np.int64)
    if len(rows) == 0:
        return partners
    frame = rows.reset_index(drop=True)
    keys = [c for c in ("frame_index", "face_index") if c in frame.columns]
    reals = frame[frame.label == "real"]
    video = reals.video_id if "video_id" in reals.columns else reals.path
    at = {(v, *k): i for i, v, *k in zip(reals.index, video, *(reals[c] for c in keys))}
    crops_of = {v: list(idx) for v, idx in reals.groupby(video).groups.items()}
    group_video = {}  # (dataset, group) -> its only real video
    if {"group", "video_id"} <= set(frame.columns):
        for key, videos in reals.groupby(["dataset", "group"]).video_id.unique().items():
            if len(videos) == 1:
                group_video[key] = videos[0]
    recorded = frame.source_video_id if "source_video_id" in frame.columns else pd.Series([None] * len(frame))
    for i in np.flatnonzero((frame.label == "fake").to_numpy()):
        source = recorded.iloc[i]
        if not isinstance(source, str) or not source:
            source = group_video.get((frame.dataset.iloc[i], frame.group.iloc[i]))
        if source is None:
            continue
        exact = at.get((source, *(frame[c].iloc[i] for c in keys)))
        if exact is None and len(crops_of.get(source, [])) == 1:
            exact = crops_of[source][0]
        partners[i] = -1 if exact is None else exact
    return partners


@dataclass
class Truth:
    mask: np.ndarray | None  # bool HxW: where the crop was changed; None when it has no usable truth
    source: np.ndarray | None  # the source crop's pixels (a removal restores them), when there is one
    origin: str  # "source_difference", "dataset_mask", "blend_mask", or why there is none
    image: np.ndarray | None = None  # the fake crop it was judged on (`manifest_truths`, usable ones)


def truth_for(fake: np.ndarray, source: np.ndarray | None = None, mask_file: Path | None = None) -> Truth:
    """The true mask of one fake crop (RGB, HxWx3): from the dataset's own mask file where it has one,
    else the difference to its aligned source crop."""
    if mask_file is not None:
        from PIL import Image

        with Image.open(mask_file) as opened:
            gray = np.asarray(opened.convert("L").resize(fake.shape[1::-1], Image.BILINEAR), np.float32) / 255
        mask = gray >= TRUTH_LEVEL
        if mask.mean() < MIN_AREA:
            return Truth(None, source, "no visible change")
        return Truth(mask, source, "dataset_mask")
    if source is None:
        return Truth(None, None, "no source crop")
    mask = difference_mask(fake, source) >= TRUTH_LEVEL
    if border_change(mask) > MAX_BORDER_CHANGE:
        return Truth(None, None, "misaligned with its source")
    if mask.mean() < MIN_AREA:
        return Truth(None, source, "no visible change")
    return Truth(mask, source, "source_difference")


def blend_truth(blend_mask: np.ndarray) -> Truth:
    """A self-blended pseudo-fake's truth: where its blend mask reaches `TRUTH_LEVEL`."""
    mask = np.asarray(blend_mask, np.float32) >= TRUTH_LEVEL
    return Truth(mask if mask.mean() >= MIN_AREA else None, None, "blend_mask")


def manifest_truths(
    rows: pd.DataFrame, root: Path, size: int, limit: int | None = None, wanted=None
) -> dict[int, Truth]:
    """The truth of each fake row (row number -> `Truth`, holding the crop where it is usable) of a
    prepared manifest's rows, its crops read at `size`; at most `limit` fakes (the first in row order),
    only the row numbers in `wanted` when given (sources are still looked up among all rows)."""
    from fakefinder.media.images import load_rgb

    frame = rows.reset_index(drop=True)
    partners = source_partners(frame)
    has_masks = "mask_path" in frame.columns
    out = {}
    for i in np.flatnonzero((frame.label == "fake").to_numpy()):
        if limit is not None and len(out) >= limit:
            break
        if wanted is not None and i not in wanted:
            continue
        mask_file = frame.mask_path.iloc[i] if has_masks else None
        mask_file = Path(root) / mask_file if isinstance(mask_file, str) and mask_file else None
        partner = partners[i]
        if mask_file is None and partner < 0:
            continue
        fake = load_rgb(Path(root) / frame.path.iloc[i], size)
        source = load_rgb(Path(root) / frame.path.iloc[partner], size) if partner >= 0 else None
        truth = truth_for(fake, source, mask_file)
        out[int(i)] = Truth(truth.mask, truth.source, truth.origin, fake) if truth.mask is not None else truth
    return out
