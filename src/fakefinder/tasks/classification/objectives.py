"""What the training loop optimises and how it validates, per label space.

`BinaryObjective` (deepfake detectors): one logit, the binary losses
(`fakefinder.tasks.classification.losses`), a
sigmoid score, and validation with the macro-F1 threshold fitted on the validation scores.
`MulticlassObjective` (image classifiers): N logits, cross-entropy / focal / soft macro-F1 over the
classes, softmax probabilities, accuracy, top-5, macro-F1 and the N x N confusion matrix.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fakefinder.config import ConfigError, TrainConfig
from fakefinder.engine.metrics import binary_metrics, fit_threshold, multiclass_metrics
from fakefinder.tasks.classification.losses import CombinedLoss

BINARY_ONLY_METRICS = {"auc", "ap", "eer"}


class BinaryObjective:
    num_outputs = 1

    def __init__(self, train: TrainConfig, labels: np.ndarray, classes: list[str]) -> None:
        self.classes = classes
        pos = float(labels.sum())
        neg = float(len(labels) - pos)
        pos_weight = (neg / pos) if train.class_weights and pos > 0 else None
        self.criterion = CombinedLoss(train.loss, train.focal_gamma, pos_weight, train.label_smoothing)

    @property
    def parts(self) -> dict[str, float]:
        return self.criterion.parts

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits, labels)

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def validate(self, labels: np.ndarray, scores: np.ndarray) -> dict:
        threshold = fit_threshold(labels, scores)
        fitted = binary_metrics(labels, scores, threshold)
        at_half = binary_metrics(labels, scores, 0.5)
        return {
            "val_loss": fitted["log_loss"],
            "val_accuracy": fitted["accuracy"],
            "val_macro_f1": fitted["macro_f1"],
            "val_macro_f1_at_0.5": at_half["macro_f1"],
            "val_auc": fitted["auc"],
            "val_ap": fitted["ap"],
            "val_eer": fitted["eer"],
            "threshold": threshold,
        }


def multiclass_focal(logits: torch.Tensor, targets: torch.Tensor, gamma: float, weight=None) -> torch.Tensor:
    """Mean of (1 - p_true)^gamma * CE over the batch."""
    ce = F.cross_entropy(logits, targets, weight=weight, reduction="none")
    p_true = torch.softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    return ((1 - p_true) ** gamma * ce).mean()


def multiclass_soft_f1(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """1 - macro soft-F1 over the classes, with probabilities in place of hard decisions."""
    probs = torch.softmax(logits, dim=1)
    truth = F.one_hot(targets, probs.shape[1]).float()
    tp = (probs * truth).sum(0)
    fp = (probs * (1 - truth)).sum(0)
    fn = ((1 - probs) * truth).sum(0)
    return 1 - (2 * tp / (2 * tp + fp + fn + eps)).mean()


class MulticlassObjective:
    LOSSES = ("ce", "focal", "f1")

    def __init__(self, train: TrainConfig, labels: np.ndarray, classes: list[str]) -> None:
        unknown = sorted(set(train.loss) - set(self.LOSSES))
        if unknown:
            raise ConfigError(
                f"train.loss: {unknown} work on binary (real/fake) models only; an N-class model takes "
                f"{list(self.LOSSES)}"
            )
        if train.early_stopping.metric in BINARY_ONLY_METRICS:
            raise ConfigError(
                f"train.early_stopping.metric={train.early_stopping.metric} is a binary metric; an N-class "
                "model selects on macro_f1, accuracy or loss"
            )
        self.classes = classes
        self.num_outputs = len(classes)
        self.weights = dict(train.loss)
        self.gamma = train.focal_gamma
        self.smoothing = train.label_smoothing
        self.class_weight = None
        if train.class_weights:
            counts = np.bincount(labels, minlength=len(classes)).astype(np.float64)
            inverse = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(classes), 0.0)
            self.class_weight = torch.tensor(inverse, dtype=torch.float32)
        self.parts: dict[str, float] = {}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits, labels = logits.float(), labels.long()
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        parts = {}
        if "ce" in self.weights:
            parts["ce"] = F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.smoothing)
        if "focal" in self.weights:
            parts["focal"] = multiclass_focal(logits, labels, self.gamma, weight)
        if "f1" in self.weights:
            parts["f1"] = multiclass_soft_f1(logits, labels)
        self.parts = {k: float(v.detach()) for k, v in parts.items()}
        return sum(self.weights[k] * v for k, v in parts.items())

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def validate(self, labels: np.ndarray, probabilities: np.ndarray) -> dict:
        m = multiclass_metrics(labels, probabilities, self.classes)
        row = {
            "val_loss": m["log_loss"],
            "val_accuracy": m["accuracy"],
            "val_macro_f1": m["macro_f1"],
            "threshold": None,
        }
        if "top5_accuracy" in m:
            row["val_top5_accuracy"] = m["top5_accuracy"]
        return row
