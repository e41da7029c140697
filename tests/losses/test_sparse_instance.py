from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from cellseg_monai.losses.sparse_instance import (
    SparseInstanceLoss,
    SparseSEUNetLoss,
    dice_coefficient_matrix,
    hungarian_match,
    matching_score,
    sigmoid_focal_loss,
)


def _brute_force(cost: np.ndarray) -> float:
    """Minimum total cost over every injective assignment of the smaller side (independent of scipy)."""
    n, k = cost.shape
    if n >= k:
        return min(sum(cost[r, c] for c, r in enumerate(rows)) for rows in itertools.permutations(range(n), k))
    return min(sum(cost[r, c] for r, c in enumerate(cols)) for cols in itertools.permutations(range(k), n))


COSTS = [
    np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]),  # classic textbook case, optimum 5
    np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.05, 0.95]]),  # more predictions than GT
    np.array([[1.0, 2.0, 0.5]]),  # fewer predictions than GT
    -np.array([[0.1, 0.7, 0.2], [0.6, 0.65, 0.0]]),  # negated scores (maximisation)
]


@pytest.mark.parametrize("cost", COSTS)
def test_hungarian_match_is_optimal(cost):
    rows, cols = hungarian_match(torch.as_tensor(cost))
    ref_rows, ref_cols = linear_sum_assignment(cost)
    assert len(rows) == min(cost.shape) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
    assert cost[rows, cols].sum() == pytest.approx(cost[ref_rows, ref_cols].sum())
    assert cost[rows, cols].sum() == pytest.approx(_brute_force(cost))


def test_hungarian_match_on_textbook_case_assignment():
    rows, cols = hungarian_match(COSTS[0])
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 1, 1: 0, 2: 2}


def test_hungarian_match_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        hungarian_match(np.array([[np.nan, 1.0]]))


def test_dice_and_matching_score_by_hand():
    pred = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    dice = dice_coefficient_matrix(pred, target)
    expected = torch.tensor([[1.0, 0.0], [2 * 0.5 / (0.5 + 2), 2 * 0.5 / (0.5 + 2)]])
    torch.testing.assert_close(dice, expected)
    prob = torch.tensor([0.64, 0.25])
    score = matching_score(prob, pred, target, lam=0.8)
    torch.testing.assert_close(score, prob[:, None] ** 0.2 * expected**0.8)
    with pytest.raises(ValueError):
        matching_score(prob, pred, target, lam=1.5)


def test_focal_loss_by_hand():
    logits = torch.tensor([0.0, 2.0])
    target = torch.tensor([1.0, 0.0])
    p = torch.sigmoid(logits)
    expected = torch.stack([0.25 * (1 - p[0]) ** 2 * -torch.log(p[0]), 0.75 * p[1] ** 2 * -torch.log(1 - p[1])])
    torch.testing.assert_close(sigmoid_focal_loss(logits, target), expected)


def _prediction(masks: torch.Tensor, logits: list[float]) -> dict[str, torch.Tensor]:
    n = masks.shape[0]
    return {
        "logits": torch.tensor(logits).view(1, n, 1).requires_grad_(),
        "objectness": torch.zeros(1, n, 1, requires_grad=True),
        "masks": masks[None].clone().requires_grad_(),
    }


def test_sparse_instance_loss_matches_the_right_prediction():
    """GT: two squares. Prediction 2 is square A, prediction 0 square B, prediction 1 nothing."""
    labels = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    labels[0, 0, 0:4, 0:4] = 1
    labels[0, 0, 4:8, 4:8] = 2
    masks = torch.full((3, 8, 8), -8.0)
    masks[2, 0:4, 0:4] = 8.0
    masks[0, 4:8, 4:8] = 8.0
    good = _prediction(masks, [4.0, -4.0, 4.0])
    loss_fn = SparseInstanceLoss(objectness_weight=0.0)
    good_loss = loss_fn(good, labels)
    # same masks, but the class scores favour the empty prediction 1: classification loss rises
    bad = _prediction(masks, [-4.0, 4.0, -4.0])
    assert loss_fn(bad, labels) > good_loss
    # mask terms: near-perfect masks on the matched pairs -> tiny dice and bce
    mask_only = SparseInstanceLoss(class_weight=0.0, objectness_weight=0.0)
    assert mask_only(good, labels).item() < 0.01
    good_loss.backward()
    assert good["masks"].grad[0, 1].abs().sum() == 0  # the unmatched prediction gets no mask gradient
    assert good["masks"].grad[0, 0].abs().sum() > 0 and good["logits"].grad.abs().sum() > 0


def test_batch_loss_and_gradients_are_the_mean_of_the_per_image_ones():
    """A batch of three images (one without objects) against each image scored alone."""
    torch.manual_seed(3)
    labels = torch.zeros(3, 1, 8, 8, dtype=torch.long)
    labels[0, 0, 1:4, 1:4], labels[0, 0, 5:8, 2:6], labels[2, 0, 2:7, 2:7] = 1, 2, 5
    raw = {"logits": torch.randn(3, 4, 1), "objectness": torch.randn(3, 4, 1), "masks": 3 * torch.randn(3, 4, 8, 8)}
    batch = {k: v.clone().requires_grad_() for k, v in raw.items()}
    loss_fn = SparseInstanceLoss()
    loss_fn(batch, labels).backward()
    singles = [{k: v[b : b + 1].clone().requires_grad_() for k, v in raw.items()} for b in range(3)]
    expected = sum(loss_fn(single, labels[b : b + 1]) for b, single in enumerate(singles)) / 3
    expected.backward()
    assert loss_fn(batch, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    for key in raw:
        reference = torch.cat([single[key].grad for single in singles])
        torch.testing.assert_close(batch[key].grad, reference, rtol=1e-5, atol=1e-7)


def test_sparse_instance_loss_without_objects_is_classification_only():
    labels = torch.zeros(2, 1, 6, 6, dtype=torch.long)
    pred = {"logits": torch.zeros(2, 3, 1), "objectness": torch.zeros(2, 3, 1), "masks": torch.zeros(2, 3, 6, 6)}
    expected = 2.0 * 3 * (0.75 * 0.5**2 * np.log(2))  # class_weight · Σ focal(0.5, target 0), divided by max(K, 1)
    assert SparseInstanceLoss()(pred, labels).item() == pytest.approx(expected, rel=1e-6)


def test_objectness_target_is_the_iou():
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    labels[0, 0, :, :2] = 1  # 8 px
    masks = torch.full((1, 4, 4), -10.0)
    masks[0, :, :1] = 10.0  # 4 px inside the GT -> IoU 0.5
    pred = {
        "logits": torch.zeros(1, 1, 1),
        "objectness": torch.zeros(1, 1, 1, requires_grad=True),
        "masks": masks[None],
    }
    SparseInstanceLoss(class_weight=0, dice_weight=0, bce_weight=0)(pred, labels).backward()
    # d BCE(σ(o), 0.5) / d o at o = 0 is σ(0) - 0.5 = 0
    assert pred["objectness"].grad.abs().item() < 1e-7


def test_joint_loss_adds_both_terms():
    torch.manual_seed(0)
    labels = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    labels[0, 0, 2:6, 2:6] = 1
    semantic = torch.rand(1, 4, 8, 8)
    pred = {
        "semantic": torch.randn(1, 4, 8, 8),
        "logits": torch.randn(1, 3, 1),
        "objectness": torch.randn(1, 3, 1),
        "masks": torch.randn(1, 3, 8, 8),
    }
    joint = SparseSEUNetLoss(semantic_weight=0.5, instance_weight=2.0)
    total = joint(pred, {"label": labels, "semantic": semantic})
    expected = 0.5 * joint.semantic(pred["semantic"], semantic) + 2.0 * joint.instance(pred, labels)
    torch.testing.assert_close(total, expected)
    with pytest.raises(TypeError):
        joint(pred, labels)
