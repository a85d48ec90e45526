import math

import numpy as np
import pytest
import torch

from fakefinder.engine.metrics import (
    average_precision,
    binary_metrics,
    equal_error_rate,
    fit_threshold,
    macro_f1,
    roc_auc,
)
from fakefinder.tasks.classification.losses import CombinedLoss, focal_loss, ranking_loss, soft_f1_loss


def test_cross_entropy_and_focal_by_hand():
    logits, targets = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    ce_by_hand = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert CombinedLoss({"ce": 1.0})(logits, targets).item() == pytest.approx(ce_by_hand, rel=1e-6)
    p = torch.sigmoid(torch.tensor(2.0)).item()
    focal_by_hand = (0.5**2 * math.log(2) + p**2 * math.log(1 + math.e**2)) / 2
    assert focal_loss(logits, targets, gamma=2.0).item() == pytest.approx(focal_by_hand, rel=1e-6)
    assert focal_loss(logits, targets, gamma=0.0).item() == pytest.approx(ce_by_hand, rel=1e-6)


def test_soft_f1_by_hand_and_extremes():
    # p = 0.5 everywhere, one fake and one real: tp = fp = fn = 0.5 for each class -> F1 = 0.5
    assert soft_f1_loss(torch.zeros(2), torch.tensor([1.0, 0.0])).item() == pytest.approx(0.5, abs=1e-6)
    perfect = soft_f1_loss(torch.tensor([30.0, -30.0]), torch.tensor([1.0, 0.0])).item()
    wrong = soft_f1_loss(torch.tensor([-30.0, 30.0]), torch.tensor([1.0, 0.0])).item()
    assert perfect == pytest.approx(0.0, abs=1e-5) and wrong == pytest.approx(1.0, abs=1e-5)


def test_ranking_loss_by_hand_and_its_gradient():
    targets = torch.tensor([1.0, 1.0, 0.0])
    assert ranking_loss(torch.zeros(3), targets).item() == pytest.approx(math.log(2), rel=1e-6)
    # pairs (fake 2, real 0) and (fake -1, real 0): mean of log(1 + e^-2) and log(1 + e^1)
    logits = torch.tensor([2.0, -1.0, 0.0], requires_grad=True)
    by_hand = (math.log(1 + math.exp(-2)) + math.log(1 + math.e)) / 2
    loss = ranking_loss(logits, targets)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    loss.backward()
    assert logits.grad[0] < 0 and logits.grad[1] < 0 and logits.grad[2] > 0  # fakes pushed up, the real down
    assert logits.grad[1] < logits.grad[0]  # the misranked fake is pushed hardest
    # ordering alone matters: shifting every logit changes nothing
    assert ranking_loss(logits.detach() + 5, targets).item() == pytest.approx(by_hand, rel=1e-6)
    one_class = torch.tensor([0.3, -0.2], requires_grad=True)
    empty = ranking_loss(one_class, torch.ones(2))
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(one_class.grad, torch.zeros(2))


def test_weighted_combination_is_the_weighted_sum_and_logs_parts():
    logits, targets = torch.randn(16), torch.randint(0, 2, (16,)).float()
    combined = CombinedLoss({"ce": 0.5, "focal": 0.3, "f1": 0.2, "auc": 0.4})
    total = combined(logits, targets)
    parts = combined.parts
    assert set(parts) == {"ce", "focal", "f1", "auc"}
    assert total.item() == pytest.approx(
        0.5 * parts["ce"] + 0.3 * parts["focal"] + 0.2 * parts["f1"] + 0.4 * parts["auc"], rel=1e-6
    )
    with pytest.raises(ValueError, match="unknown loss"):
        CombinedLoss({"hinge": 1.0})


def test_metrics_by_hand():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    assert roc_auc(labels, scores) == pytest.approx(0.75)  # 3 of 4 (fake, real) pairs ordered right
    assert average_precision(labels, scores) == pytest.approx((1 / 1 + 2 / 3) / 2)
    # at 0.5: predictions 0,0,0,1 -> real P=2/3 R=1 F1=0.8; fake P=1 R=0.5 F1=2/3
    assert macro_f1(labels, scores, 0.5) == pytest.approx((0.8 + 2 / 3) / 2)
    metrics = binary_metrics(labels, scores, 0.5)
    assert metrics["confusion"] == [[2, 0], [1, 1]]
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_eer_by_hand():
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.0)
    assert equal_error_rate([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.5)
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5)


def test_fitted_threshold_maximises_macro_f1():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(0.25 + 0.3 * labels + rng.normal(0, 0.15, 400), 0, 1)
    threshold = fit_threshold(labels, scores)
    best = macro_f1(labels, scores, threshold)
    for t in np.linspace(0, 1, 101):
        assert macro_f1(labels, scores, t) <= best + 1e-12
    assert 0.3 < threshold < 0.6
