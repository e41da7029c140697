from __future__ import annotations

import math

import pytest
import torch

from cellseg_monai.losses.seunet import FocalOverlapLoss, MultiHeadBCELoss, SEUNetLoss


def _bce(p: float, t: float) -> float:
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_multi_head_bce_is_the_weighted_sum_of_per_head_means():
    """Eq. 4.1-4.2 by hand on a 1 x 2 image with two heads."""
    probs = [[0.8, 0.3], [0.6, 0.9]]
    targets = [[1.0, 0.0], [0.0, 1.0]]
    logits = torch.tensor([[[[_logit(p) for p in row]] for row in probs]], dtype=torch.float64)  # (1, 2, 1, 2)
    target = torch.tensor([[[row] for row in targets]], dtype=torch.float64)
    weights = (2.0, 0.5)
    expected = sum(
        w * (_bce(p[0], t[0]) + _bce(p[1], t[1])) / 2 for w, p, t in zip(weights, probs, targets, strict=True)
    )
    assert MultiHeadBCELoss(weights)(logits, target).item() == pytest.approx(expected, rel=1e-9)


def test_focal_overlap_loss_by_hand():
    """Two instance pixels (t = 1, 0.55) and two background pixels (t = 0.1), gamma 2, reweighted halves."""
    probs = [0.7, 0.5, 0.2, 0.1]
    targets = [1.0, 0.55, 0.1, 0.1]
    logits = torch.tensor([_logit(p) for p in probs], dtype=torch.float64).view(1, 1, 2, 2)
    target = torch.tensor(targets, dtype=torch.float64).view(1, 1, 2, 2)
    terms = [abs(t - p) ** 2 * _bce(p, t) for p, t in zip(probs, targets, strict=True)]
    expected = 0.5 * (terms[0] + terms[1]) / 2 + 0.5 * (terms[2] + terms[3]) / 2
    assert FocalOverlapLoss(gamma=2.0, background=0.1)(logits, target).item() == pytest.approx(expected, rel=1e-9)
    plain = sum(_bce(p, t) for p, t in zip(probs, targets, strict=True)) / 4
    loss = FocalOverlapLoss(gamma=0.0, reweight=False)(logits, target)
    assert loss.item() == pytest.approx(plain, rel=1e-9)


def test_focal_overlap_loss_all_background_image():
    logits = torch.zeros(2, 1, 3, 3)
    target = torch.full((2, 1, 3, 3), 0.1)
    per_image = FocalOverlapLoss(gamma=1.0, reduction="none")(logits, target)
    assert per_image.shape == (2,)
    assert per_image[0].item() == pytest.approx(0.4 * _bce(0.5, 0.1), rel=1e-6)


def test_seunet_loss_routes_overlap_head_to_focal_loss():
    torch.manual_seed(0)
    heads = ("foreground", "overlap", "border")
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.rand(2, 3, 8, 8).round()
    target[:, 1] = torch.rand(2, 8, 8) * 0.9 + 0.1
    loss = SEUNetLoss(heads, {"foreground": 2.0, "overlap": 3.0})(logits, target)
    expected = MultiHeadBCELoss([2.0, 1.0])(logits[:, [0, 2]], target[:, [0, 2]]) + 3.0 * FocalOverlapLoss()(
        logits[:, 1:2], target[:, 1:2]
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "build,error",
    [
        (lambda: SEUNetLoss(("foreground",), {"nuclei": 1.0}), ValueError),
        (lambda: FocalOverlapLoss(gamma=-1), ValueError),
        (lambda: MultiHeadBCELoss([1.0], reduction="max"), ValueError),
    ],
)
def test_bad_arguments(build, error):
    with pytest.raises(error):
        build()


def test_shape_mismatch():
    with pytest.raises(ValueError, match="channels"):
        SEUNetLoss(("foreground", "border"))(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError):
        MultiHeadBCELoss([1.0])(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
