"""Frame scores -> one score per video, grouped by the unique `video_id` (never by folder name)."""

from __future__ import annotations

import numpy as np
import pandas as pd

AGGREGATIONS = ("mean", "max", "topk", "confident")


def aggregate_scores(
    scores: np.ndarray,
    method: str = "mean",
    top_k: int = 3,
    confident: tuple[float, float, float] = (0.8, 0.2, 0.4),
) -> float:
    """One video's score from its frame scores.

    confident: if at least `share` of the frames are confidently fake (>= high), the mean of those;
    else if at least `share` are confidently real (<= low), the mean of those; else the plain mean.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("a video needs at least one frame score")
    if method == "mean":
        return float(scores.mean())
    if method == "max":
        return float(scores.max())
    if method == "topk":
        return float(np.sort(scores)[-top_k:].mean())
    if method == "confident":
        high, low, share = confident
        fake, real = scores[scores >= high], scores[scores <= low]
        if fake.size >= share * scores.size:
            return float(fake.mean())
        if real.size >= share * scores.size:
            return float(real.mean())
        return float(scores.mean())
    raise ValueError(f"unknown aggregation '{method}' (choose from {AGGREGATIONS})")


def aggregate_videos(frames: pd.DataFrame, method: str = "mean", top_k: int = 3) -> pd.DataFrame:
    """`frames` has video_id, label, score (and optionally dataset, method, group): one row per
    video with the aggregated score and the number of frames."""
    keep = [c for c in ("dataset", "method", "group", "label", "source_path") if c in frames.columns]
    labels = frames.groupby("video_id")["label"].nunique()
    mixed = labels[labels > 1]
    if len(mixed):
        raise ValueError(
            f"video_id {mixed.index[0]} has frames with different labels; video ids must be unique"
        )
    grouped = frames.groupby("video_id", sort=True)
    videos = grouped[keep].first()
    videos["score"] = grouped["score"].apply(lambda s: aggregate_scores(s.to_numpy(), method, top_k))
    videos["frames"] = grouped.size()
    return videos.reset_index()
