"""Binary losses on one logit per sample (1 = fake): cross-entropy, focal, soft-F1, a pairwise
ranking (AUC) loss, and a weighted combination such as `{ce: 0.5, focal: 0.3, f1: 0.2}`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fakefinder.config import LOSS_NAMES


def bce_loss(logits, targets, pos_weight: float | None = None, label_smoothing: float = 0.0):
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + 0.5 * label_smoothing
    weight = (
        None if pos_weight is None else torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    )
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)


def focal_loss(logits, targets, gamma: float = 2.0, alpha: float | None = None):
    """Down-weights easy samples: mean of (1 - p_t)^gamma * CE."""
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = (1 - p_t) ** gamma * ce
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean()


def soft_f1_loss(logits, targets, eps: float = 1e-7):
    """1 - macro soft-F1 over both classes, with probabilities in place of hard decisions."""
    p = torch.sigmoid(logits)
    scores = []
    for prob, truth in ((p, targets), (1 - p, 1 - targets)):
        tp = (prob * truth).sum()
        fp = (prob * (1 - truth)).sum()
        fn = ((1 - prob) * truth).sum()
        scores.append(2 * tp / (2 * tp + fp + fn + eps))
    return 1 - torch.stack(scores).mean()


def ranking_loss(logits, targets):
    """A smooth stand-in for 1 - AUC: the mean over every (fake, real) pair in the batch of
    log(1 + exp(-(logit_fake - logit_real))), i.e. how far each fake ranks below each real. A batch
    with only one class has no pairs and contributes zero (with a zero gradient)."""
    fake, real = logits[targets > 0.5], logits[targets <= 0.5]
    if not len(fake) or not len(real):
        return logits.sum() * 0.0
    return F.softplus(real[None, :] - fake[:, None]).mean()


def mask_loss(mask_logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE between predicted manipulation-mask logits (N, 1, h, w) and target masks
    (N, 1, H, W, area-pooled to h x w), averaged over the samples whose mask is known (`valid`)."""
    target = F.adaptive_avg_pool2d(target.float(), mask_logits.shape[-2:])
    per_sample = F.binary_cross_entropy_with_logits(mask_logits.float(), target, reduction="none").mean(
        dim=(1, 2, 3)
    )
    valid = valid.float()
    return (per_sample * valid).sum() / valid.sum().clamp(min=1.0)


LOSSES = LOSS_NAMES  # the names configs may use, with what each is


class CombinedLoss(nn.Module):
    """Weighted sum of named losses; `parts` of the last call are kept for logging."""

    def __init__(
        self,
        weights: dict[str, float],
        focal_gamma: float = 2.0,
        pos_weight: float | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        unknown = set(weights) - set(LOSSES)
        if unknown:
            raise ValueError(f"unknown loss(es) {sorted(unknown)}; choose from {sorted(LOSSES)}")
        if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"loss weights must be >= 0 with a positive sum, got {weights}")
        self.weights = dict(weights)
        self.focal_gamma = focal_gamma
        self.pos_weight = pos_weight
        self.label_smoothing = label_smoothing
        self.parts: dict[str, float] = {}

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        parts = {}
        if "ce" in self.weights:
            parts["ce"] = bce_loss(logits, targets, self.pos_weight, self.label_smoothing)
        if "focal" in self.weights:
            parts["focal"] = focal_loss(logits, targets, self.focal_gamma)
        if "f1" in self.weights:
            parts["f1"] = soft_f1_loss(logits, targets)
        if "auc" in self.weights:
            parts["auc"] = ranking_loss(logits, targets)
        self.parts = {k: float(v.detach()) for k, v in parts.items()}
        return sum(self.weights[k] * v for k, v in parts.items())
