"""Classification metrics from scikit-learn: binary detection (1 = fake; AUC, AP, EER from the ROC
curve, confusion matrix, per-class report) and N-class classification (accuracy, top-5, per-class
precision/recall/F1, macro-F1, the N x N confusion matrix). What scikit-learn lacks is here: the
equal error rate read off its ROC curve, and the decision threshold fitted on validation data."""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm


def _as_arrays(labels, scores):
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(scores, dtype=np.float64)
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {p.shape}")
    return y, p


def _both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    y, p = _as_arrays(labels, scores)
    return float(skm.roc_auc_score(y, p)) if _both_classes(y) else float("nan")


def average_precision(labels, scores) -> float:
    y, p = _as_arrays(labels, scores)
    return float(skm.average_precision_score(y, p)) if y.sum() else float("nan")


def equal_error_rate(labels, scores) -> float:
    """Where the ROC curve's false-positive rate equals its false-negative rate (interpolated
    between the two ROC points around the crossing)."""
    y, p = _as_arrays(labels, scores)
    if not _both_classes(y):
        return float("nan")
    fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    diff = fpr - (1 - tpr)  # from -1 (nothing flagged) up to +1 (everything flagged)
    index = int(np.argmax(diff >= 0))
    if index == 0:
        return float((fpr[0] + 1 - tpr[0]) / 2)
    d0, d1 = diff[index - 1], diff[index]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[index - 1] + w * (fpr[index] - fpr[index - 1]))


def confusion(labels, predictions) -> np.ndarray:
    """[[TN, FP], [FN, TP]]: rows are the truth (real, fake), columns the prediction."""
    y, q = _as_arrays(labels, predictions)
    return skm.confusion_matrix(y, q.astype(np.int64), labels=[0, 1])


def per_class_report(labels, predictions, names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class (classes with no prediction score 0)."""
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predictions, labels=list(range(len(names))), zero_division=0
    )
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }


def macro_f1(labels, scores, threshold: float = 0.5) -> float:
    y, p = _as_arrays(labels, scores)
    return float(
        skm.f1_score(y, (p >= threshold).astype(np.int64), average="macro", labels=[0, 1], zero_division=0)
    )


def log_loss(labels, scores, eps: float = 1e-7) -> float:
    y, p = _as_arrays(labels, scores)
    return float(skm.log_loss(y, np.clip(p, eps, 1 - eps), labels=[0, 1]))


def fit_threshold(labels, scores) -> float:
    """The threshold that maximises macro-F1 on these (validation) scores; midpoints between
    consecutive distinct scores, so it generalises rather than sitting on a sample."""
    y, p = _as_arrays(labels, scores)
    if not _both_classes(y):
        return 0.5
    values = np.unique(p)
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])
    if len(candidates) > 2000:
        candidates = np.quantile(p, np.linspace(0, 1, 2001))
    # every candidate at once: how many fakes and reals score at or above it
    order = np.sort(p)
    fakes = np.sort(p[y == 1])
    flagged = len(p) - np.searchsorted(order, candidates, side="left")
    tp = len(fakes) - np.searchsorted(fakes, candidates, side="left")
    fp = flagged - tp
    fn = len(fakes) - tp
    tn = len(p) - flagged - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_fake = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1_real = np.where(tn + fn + fp > 0, 2 * tn / (2 * tn + fn + fp), 0.0)
    score = (f1_fake + f1_real) / 2
    return float(candidates[int(np.argmax(score))])  # the first (lowest) of equally good thresholds


def binary_metrics(labels, scores, threshold: float = 0.5) -> dict:
    y, p = _as_arrays(labels, scores)
    predicted = (p >= threshold).astype(np.int64)
    matrix = confusion(y, predicted)
    classes = per_class_report(y, predicted, ["real", "fake"])
    return {
        "n": int(len(y)),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y, predicted)) if len(y) else float("nan"),
        "macro_f1": (classes["real"]["f1"] + classes["fake"]["f1"]) / 2,
        "auc": roc_auc(y, p),
        "eer": equal_error_rate(y, p),
        "ap": average_precision(y, p),
        "log_loss": log_loss(y, p) if len(y) else float("nan"),
        "per_class": classes,
        "confusion": matrix.tolist(),
    }


def multiclass_metrics(labels, probabilities, names: list[str]) -> dict:
    """N-class metrics from class probabilities (n x N): accuracy, top-5 (more than 5 classes),
    macro-F1, per-class precision/recall/F1, the N x N confusion matrix (rows: truth) and log loss."""
    y = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(y), len(names)):
        raise ValueError(f"probabilities must be {len(y)} x {len(names)}, got {probs.shape}")
    classes = list(range(len(names)))
    predicted = probs.argmax(axis=1)
    out = {
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "macro_f1": float(skm.f1_score(y, predicted, average="macro", labels=classes, zero_division=0)),
        "per_class": per_class_report(y, predicted, names),
        "confusion": skm.confusion_matrix(y, predicted, labels=classes).tolist(),
        "classes": list(names),
        "log_loss": float(skm.log_loss(y, _normalised(probs), labels=classes)),
    }
    if len(names) > 5:
        out["top5_accuracy"] = float(skm.top_k_accuracy_score(y, probs, k=5, labels=classes))
    return out


def _normalised(probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Rows clipped away from 0 and summing to one again (float32 softmax rows miss 1 by a few ulps)."""
    clipped = np.clip(probs, eps, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def is_better(metric: str, new: float, old: float | None) -> bool:
    if new is None or (isinstance(new, float) and math.isnan(new)):
        return False
    if old is None:
        return True
    lower_is_better = metric in {"loss", "eer", "log_loss"}
    return new < old if lower_is_better else new > old
