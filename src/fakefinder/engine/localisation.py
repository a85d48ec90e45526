"""How well a heatmap says where an image was changed, against the true mask of the change, and how
faithful it is to the model's decision; with the two baselines every figure is read beside: a centred
Gaussian face prior and a random map.

- `pointing_game`: is the map's peak inside the mask;
- `pixel_auc`: the map as a per-pixel score of "changed", against the mask;
- `iou_at`: the overlap of the map above a threshold (fitted on validation) with the mask;
- `deletion_drop`: the fall in the fake probability when the map's top-k % of pixels are removed
  (restored from the source image where there is one, else a stated fill)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def _same_size(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    values = np.asarray(heatmap, np.float32)
    if values.shape != tuple(shape):
        values = cv2.resize(values, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return values


def face_prior(height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    """A Gaussian centred on the crop (`sigma` in fractions of its size): "the middle of the face",
    the map a model that learned nothing about the manipulation would draw."""
    y, x = np.mgrid[0:height, 0:width]
    u, v = (x + 0.5) / width - 0.5, (y + 0.5) / height - 0.5
    return np.exp(-(u**2 + v**2) / (2 * sigma**2)).astype(np.float32)


def random_map(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Uniform noise: the chance level of every figure here."""
    return np.random.default_rng(seed).random((height, width), dtype=np.float32)


def pointing_game(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """1.0 where the map's peak (the mean position of its ties) lies inside the mask, else 0.0."""
    mask = np.asarray(mask) > 0
    values = _same_size(heatmap, mask.shape)
    peaks = np.argwhere(values >= values.max())
    inside = mask[peaks[:, 0], peaks[:, 1]]
    return float(inside.mean() >= 0.5)


def pixel_auc(heatmap: np.ndarray, mask: np.ndarray) -> float | None:
    """The ROC AUC of the map's values as scores of the mask's pixels (None: the mask is empty or
    covers everything, so there is nothing to rank)."""
    from sklearn.metrics import roc_auc_score

    truth = (np.asarray(mask) > 0).ravel()
    if truth.all() or not truth.any():
        return None
    return float(roc_auc_score(truth, _same_size(heatmap, np.asarray(mask).shape).ravel()))


def iou_at(heatmap: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """Intersection over union of the map above `threshold` (on the map normalised to 0..1) and the mask."""
    truth = np.asarray(mask) > 0
    values = _same_size(heatmap, truth.shape)
    span = float(values.max() - values.min())
    scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    found = scaled >= threshold
    union = np.logical_or(found, truth).sum()
    return float(np.logical_and(found, truth).sum() / union) if union else 0.0


def top_fraction(heatmap: np.ndarray, fraction: float) -> np.ndarray:
    """A boolean mask of the map's highest `fraction` of pixels (ties broken by position)."""
    values = np.asarray(heatmap, np.float32).ravel()
    count = int(round(fraction * values.size))
    chosen = np.zeros(values.size, bool)
    if count:
        chosen[np.argsort(-values, kind="stable")[:count]] = True
    return chosen.reshape(np.asarray(heatmap).shape)


def remove(image: np.ndarray, where: np.ndarray, source: np.ndarray | None = None, fill=None) -> np.ndarray:
    """`image` with the pixels `where` replaced: by the source image's pixels where a source exists (so
    the removal itself adds no new cue), else by `fill` (default: the image's mean colour)."""
    out = np.array(image, copy=True)
    if source is not None:
        out[where] = np.asarray(source)[where]
    else:
        out[where] = np.asarray(fill if fill is not None else image.reshape(-1, image.shape[-1]).mean(axis=0))
    return out


def deletion_drop(
    score: Callable[[np.ndarray], float],
    image: np.ndarray,
    heatmap: np.ndarray,
    fraction: float,
    source: np.ndarray | None = None,
    fill=None,
) -> float:
    """How much the fake probability `score(image)` falls when the map's top `fraction` of pixels are
    removed (see `remove`): positive when the map points at what the decision rests on."""
    where = top_fraction(_same_size(heatmap, image.shape[:2]), fraction)
    return float(score(image) - score(remove(image, where, source, fill)))
