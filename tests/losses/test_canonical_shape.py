from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cellseg_monai.losses.canonical_shape import CanonicalShapeLoss, count_loss, soft_dice_loss

# presence (B, N), counts K, hand-computed (Σ p - K)²
COUNT_CASES = [
    ([[0.5, 0.5, 1.0, 0.0]], [5], [9.0]),  # Σ = 2, K = 5
    ([[0.5, 0.5, 1.0, 0.0], [0.2, 0.2, 0.2, 0.2]], [5, 0], [9.0, 0.64]),
    ([[0.25, 0.25, 0.25, 0.25]], [[1]], [0.0]),  # (B, 1) counts
    ([[1.0, 1.0, 1.0]], [0], [9.0]),
]


@pytest.mark.parametrize("presence,count,expected", COUNT_CASES)
def test_count_loss_by_hand(presence, count, expected):
    got = count_loss(torch.tensor(presence), torch.tensor(count))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def _case():
    """2 images of 2×2: hand-checkable BCE and Dice."""
    p = torch.tensor([[[[0.5, 0.9], [0.1, 0.2]]], [[[0.8, 0.8], [0.8, 0.8]]]])
    g = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 1.0]]]])
    return p, g


def _hand_terms():
    bce0 = -(math.log(0.5) + math.log(0.9) + math.log(0.9) + math.log(0.8)) / 4
    bce1 = -(3 * math.log(0.2) + math.log(0.8)) / 4
    dice0 = 1 - (2 * 1.4 + 1) / (1.7 + 2 + 1)
    dice1 = 1 - (2 * 0.8 + 1) / (3.2 + 1 + 1)
    return [bce0, bce1], [dice0, dice1]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [0.0, 1e-2, 0.5])
def test_total_against_hand_values(reduction, alpha):
    p, g = _case()
    presence = torch.tensor([[0.5, 0.5, 1.0, 0.0], [0.2, 0.2, 0.2, 0.2]])
    count = torch.tensor([5, 0])
    bce, dice = _hand_terms()
    per_image = np.array(bce) + np.array(dice) + alpha * np.array([9.0, 0.64])
    expected = {"mean": per_image.mean(), "sum": per_image.sum(), "none": per_image}[reduction]
    loss = CanonicalShapeLoss(alpha=alpha, reduction=reduction)
    got_dict = loss(p, {"mask": g, "count": count}, presence=presence)
    got_kw = loss(p, g, presence=presence, count=count)
    np.testing.assert_allclose(got_dict.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(got_kw.numpy(), expected, rtol=1e-5)


def test_terms_exposed_for_logging():
    p, g = _case()
    presence = torch.tensor([[0.5, 0.5, 1.0, 0.0], [0.2, 0.2, 0.2, 0.2]])
    terms = CanonicalShapeLoss(alpha=1e-2).terms(p, {"mask": g, "count": torch.tensor([[5], [0]])}, presence)
    bce, dice = _hand_terms()
    assert set(terms) == {"bce", "dice", "count", "total"}
    assert terms["bce"].item() == pytest.approx(np.mean(bce), rel=1e-5)
    assert terms["dice"].item() == pytest.approx(np.mean(dice), rel=1e-5)
    assert terms["count"].item() == pytest.approx((9.0 + 0.64) / 2, rel=1e-5)
    assert terms["total"].item() == pytest.approx(np.mean(bce) + np.mean(dice) + 1e-2 * 4.82, rel=1e-5)


def test_soft_dice_hand_values():
    p, g = _case()
    np.testing.assert_allclose(soft_dice_loss(p, g).numpy(), _hand_terms()[1], rtol=1e-6)
    empty = torch.zeros(1, 1, 3, 3)
    assert soft_dice_loss(empty, empty).item() == pytest.approx(0.0)


def test_larger_target_is_area_averaged():
    pred = torch.full((1, 1, 2, 2), 0.5)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    mask[..., :, :4] = 1  # left half
    mask[..., :2, 4:] = 1  # + top quarter of the top-right block
    loss = CanonicalShapeLoss(alpha=0.0)
    # reference target: block means [[1, 0.5], [1, 0]]
    soft = torch.tensor([[[[1.0, 0.5], [1.0, 0.0]]]])
    bce_ref = -np.mean([math.log(0.5)] * 4)  # BCE at p = 0.5 is log 2 whatever the (soft) target
    dice_ref = 1 - (2 * 0.5 * 2.5 + 1) / (2.0 + 2.5 + 1)
    assert loss.terms(pred, mask)["bce"].item() == pytest.approx(bce_ref, rel=1e-5)
    assert loss.terms(pred, mask)["dice"].item() == pytest.approx(dice_ref, rel=1e-5)
    assert loss(pred, mask).item() == pytest.approx(loss(pred, soft).item(), rel=1e-6)


def test_gradients_reach_prediction_and_presence():
    p = torch.rand(2, 1, 8, 8, requires_grad=True)
    presence = torch.rand(2, 16, requires_grad=True)
    g = (torch.rand(2, 1, 8, 8) > 0.5).float()
    CanonicalShapeLoss()(p, {"mask": g, "count": torch.tensor([3, 1])}, presence=presence).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert torch.isfinite(presence.grad).all() and presence.grad.abs().sum() > 0


def test_saturated_prediction_stays_finite():
    p = torch.tensor([[[[0.0, 1.0]]]], requires_grad=True)
    value = CanonicalShapeLoss(alpha=0.0)(p, torch.tensor([[[[1.0, 0.0]]]]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(p.grad).all()


@pytest.mark.parametrize(
    "kwargs,call",
    [
        ({"reduction": "max"}, None),
        ({"alpha": -1.0}, None),
        ({}, "no_presence"),
        ({"alpha": 0.0}, "bad_shape"),
        ({}, "bad_count"),
        ({"alpha": 0.0}, "no_mask_key"),
    ],
)
def test_errors(kwargs, call):
    p, g = _case()
    with pytest.raises(ValueError):
        loss = CanonicalShapeLoss(**kwargs)
        if call == "no_presence":
            loss(p, {"mask": g, "count": torch.tensor([1, 2])})
        elif call == "bad_shape":
            loss(p[:, 0], g)
        elif call == "bad_count":
            loss(p, g, presence=torch.rand(2, 4), count=torch.tensor([1, 2, 3]))
        elif call == "no_mask_key":
            loss(p, {"labels": g})


def test_loss_takes_the_training_dict_of_the_network():
    combined = torch.full((2, 1, 8, 8), 0.5)
    presence = torch.tensor([[0.5, 0.5, 1.0], [0.0, 0.0, 0.0]])
    target = {"mask": torch.ones(2, 1, 8, 8), "count": torch.tensor([[1.0], [2.0]])}
    loss = CanonicalShapeLoss(alpha=1.0, reduction="none")
    # counts: (2 - 1)^2 = 1 and (0 - 2)^2 = 4; BCE = log 2; Dice = 1 - (2·32 + 1) / (32 + 64 + 1)
    expected = math.log(2.0) + (1 - 65 / 97) + torch.tensor([1.0, 4.0])
    torch.testing.assert_close(loss({"combined": combined, "presence": presence}, target), expected.float())
    with pytest.raises(ValueError, match="combined"):
        loss({"mask": combined}, target)
