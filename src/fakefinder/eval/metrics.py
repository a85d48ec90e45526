"""Binary detection metrics (1 = fake) and the decision threshold fitted on validation data."""

from __future__ import annotations

import math

import numpy as np


def _as_arrays(labels, scores):
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(scores, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {p.shape}")
    return y, p


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    y, p = _as_arrays(labels, scores)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def confusion(labels, predictions) -> np.ndarray:
    """[[TN, FP], [FN, TP]] with rows = truth (real, fake), columns = prediction."""
    y, q = _as_arrays(labels, predictions)
    q = q.astype(np.int64)
    return np.array([[np.sum((y == 0) & (q == 0)), np.sum((y == 0) & (q == 1))],
                     [np.sum((y == 1) & (q == 0)), np.sum((y == 1) & (q == 1))]])


def per_class(matrix: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for index, name in enumerate(("real", "fake")):
        tp = matrix[index, index]
        predicted = matrix[:, index].sum()
        actual = matrix[index, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(actual)}
    return out


def macro_f1(labels, scores, threshold: float = 0.5) -> float:
    y, p = _as_arrays(labels, scores)
    classes = per_class(confusion(y, p >= threshold))
    return (classes["real"]["f1"] + classes["fake"]["f1"]) / 2


def fit_threshold(labels, scores) -> float:
    """The threshold that maximises macro-F1 on these (validation) scores; midpoints between
    consecutive distinct scores, so it generalises rather than sitting on a sample."""
    y, p = _as_arrays(labels, scores)
    if len(np.unique(y)) < 2:
        return 0.5
    values = np.unique(p)
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])
    if len(candidates) > 2000:
        candidates = np.quantile(p, np.linspace(0, 1, 2001))
    # vectorised macro-F1 over every candidate
    order = np.argsort(-p)
    p_sorted, y_sorted = p[order], y[order]
    pos, total = y.sum(), len(y)
    best, best_t = -1.0, 0.5
    for t in candidates:
        k = np.searchsorted(-p_sorted, -t, side="right")  # number predicted fake (p >= t)
        tp = y_sorted[:k].sum()
        fp = k - tp
        fn = pos - tp
        tn = total - k - fn
        f1_fake = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        f1_real = 2 * tn / (2 * tn + fn + fp) if tn + fn + fp else 0.0
        score = (f1_fake + f1_real) / 2
        if score > best + 1e-12:
            best, best_t = score, float(t)
    return best_t


def equal_error_rate(labels, scores) -> float:
    """The error rate where false-positive rate equals false-negative rate (interpolated)."""
    y, p = _as_arrays(labels, scores)
    if len(np.unique(y)) < 2:
        return float("nan")
    thresholds = np.unique(p)[::-1]
    pos, neg = y.sum(), len(y) - y.sum()
    fpr = np.array([np.sum((p >= t) & (y == 0)) / neg for t in thresholds])
    fnr = np.array([np.sum((p < t) & (y == 1)) / pos for t in thresholds])
    diff = fpr - fnr  # goes from <= 0 (high threshold) to >= 0
    index = int(np.argmax(diff >= 0))
    if index == 0:
        return float((fpr[0] + fnr[0]) / 2)
    d0, d1 = diff[index - 1], diff[index]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[index - 1] + w * (fpr[index] - fpr[index - 1]))


def average_precision(labels, scores) -> float:
    y, p = _as_arrays(labels, scores)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    y_sorted = y[order]
    hits = np.cumsum(y_sorted)
    precision_at_k = hits / np.arange(1, len(y) + 1)
    return float((precision_at_k * y_sorted).sum() / y.sum())


def log_loss(labels, scores, eps: float = 1e-7) -> float:
    y, p = _as_arrays(labels, scores)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def binary_metrics(labels, scores, threshold: float = 0.5) -> dict:
    y, p = _as_arrays(labels, scores)
    matrix = confusion(y, p >= threshold)
    classes = per_class(matrix)
    return {
        "n": int(len(y)),
        "threshold": float(threshold),
        "accuracy": float(np.trace(matrix) / max(1, matrix.sum())),
        "macro_f1": (classes["real"]["f1"] + classes["fake"]["f1"]) / 2,
        "auc": roc_auc(y, p),
        "eer": equal_error_rate(y, p),
        "ap": average_precision(y, p),
        "log_loss": log_loss(y, p),
        "per_class": classes,
        "confusion": matrix.tolist(),
    }


def is_better(metric: str, new: float, old: float | None) -> bool:
    if new is None or (isinstance(new, float) and math.isnan(new)):
        return False
    if old is None:
        return True
    lower_is_better = metric in {"loss", "eer", "log_loss"}
    return new < old if lower_is_better else new > old
