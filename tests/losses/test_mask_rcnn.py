from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cellseg_monai.losses.mask_rcnn import MaskRCNNLoss, box_head_loss, centerness_targets, mask_loss, rpn_loss


def _hand_labels() -> torch.Tensor:
    lab = torch.zeros((1, 1, 14, 14), dtype=torch.long)
    lab[0, 0, 1:11, 1:11] = 1  # labelled nucleus, box (1, 1, 11, 11): centre 6, side 10
    lab[0, 0, 12:14, 12:14] = 2  # tiny labelled nucleus: no sample centre inside its central box
    return lab


def test_centerness_targets_hand_made_stride_1():
    classes, box_t = centerness_targets(_hand_labels(), stride=1, map_size=(14, 14), anchor_size=(4.0, 4.0))
    c = classes[0].numpy()
    expected = np.full((14, 14), -1)  # background (and any unlabelled nucleus) is ignored
    expected[1:11, 1:11] = 0  # the rest of the labelled mask is negative
    expected[4:8, 4:8] = 1  # pixel centres i + 0.5 within 6 +- 0.15 * 10 -> i = 4..7
    expected[12:14, 12:14] = 0
    expected[12, 12] = 1  # the tiny nucleus keeps its sample nearest to the centre (first of the ties)
    np.testing.assert_array_equal(c, expected)
    # box target of pixel (5, 5): anchor centre (5, 5) size 4 -> gt centre 6, size 10
    want = [(6 - 5) / 4, (6 - 5) / 4, math.log(10 / 4), math.log(10 / 4)]
    np.testing.assert_allclose(box_t[0, 5, 5].numpy(), want, rtol=1e-5)
    assert (box_t[0][classes[0] != 1] == 0).all()


def test_centerness_targets_stride_2_samples_the_map():
    lab = torch.zeros((1, 1, 16, 16), dtype=torch.long)
    lab[0, 0, 0:10, 0:10] = 3  # centre 5, central half-side 1.5; samples at 2i + 1 + 0.5
    classes, _ = centerness_targets(lab, stride=2, map_size=(8, 8), anchor_size=(8.0, 8.0))
    c = classes[0].numpy()
    expected = np.full((8, 8), -1)
    expected[0:5, 0:5] = 0  # sampled pixels 2i + 1 (centres 1.5, 3.5, ..., 9.5) lie in the mask for i <= 4
    expected[1:3, 1:3] = 1  # centres 3.5 and 5.5 are within 5 +- 0.15 * 10
    np.testing.assert_array_equal(c, expected)


def test_unlabelled_nuclei_are_ignored_not_negative():
    lab = _hand_labels()
    lab[0, 0, 12:14, 12:14] = 0  # drop the tiny nucleus from the partial labels
    classes, _ = centerness_targets(lab, 1, (14, 14), (4.0, 4.0))
    assert (classes[0, 12:14, 12:14] == -1).all()


def _bce(x, y):
    return float(np.mean(np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0) - x * y))


def _smooth_l1(d, beta):
    d = np.abs(d)
    return np.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta)


def _output():
    g = torch.Generator().manual_seed(0)
    return {
        "rpn_logits": torch.randn(6, generator=g),
        "rpn_labels": torch.tensor([1.0, 0, 0, 1, 0, 0]),
        "rpn_deltas": torch.randn(2, 4, generator=g),
        "rpn_targets": torch.randn(2, 4, generator=g),
        "box_logits": torch.randn(4, 2, generator=g),
        "box_labels": torch.tensor([1, 0, 0, 0]),
        "box_deltas": torch.randn(1, 4, generator=g),
        "box_targets": torch.randn(1, 4, generator=g),
        "mask_logits": torch.randn(1, 28, 28, generator=g),
        "mask_targets": (torch.rand(1, 28, 28, generator=g) > 0.5).float(),
    }


def test_head_losses_against_numpy():
    out = _output()
    cls, reg = rpn_loss(out)
    assert float(cls) == pytest.approx(_bce(out["rpn_logits"].numpy(), out["rpn_labels"].numpy()), rel=1e-5)
    d = (out["rpn_deltas"] - out["rpn_targets"]).numpy()
    assert float(reg) == pytest.approx(_smooth_l1(d, 1 / 9).sum() / 6, rel=1e-5)
    cls, reg = box_head_loss(out)
    lg = out["box_logits"].numpy()
    lse = np.log(np.exp(lg).sum(1))
    ce = np.mean(lse - lg[np.arange(4), out["box_labels"].numpy()])
    assert float(cls) == pytest.approx(ce, rel=1e-5)
    assert float(reg) == pytest.approx(_smooth_l1((out["box_deltas"] - out["box_targets"]).numpy(), 1.0).sum() / 4)
    assert float(mask_loss(out)) == pytest.approx(
        _bce(out["mask_logits"].numpy().ravel(), out["mask_targets"].numpy().ravel()), rel=1e-5
    )


def test_total_weights_and_warmup_terms():
    out = _output()
    lab = _hand_labels()
    out.update(
        centerness_logits=torch.zeros(1, 1, 14, 14, requires_grad=True),
        centerness_deltas=torch.zeros(1, 4, 14, 14, requires_grad=True),
        centerness_stride=1,
        centerness_anchor_size=torch.tensor([4.0, 4.0]),
    )
    loss = MaskRCNNLoss(weights={"mask": 2.0})
    total = loss(out, lab)
    t = loss.last_terms
    assert set(t) == set(MaskRCNNLoss.TERMS)
    assert float(total.detach()) == pytest.approx(sum(t.values()) + t["mask"], rel=1e-5)
    assert t["centerness"] == pytest.approx(math.log(2), rel=1e-5)  # logits 0 on every sampled pixel
    loss.centerness_only = True
    total = loss(out, lab)
    assert set(loss.last_terms) == {"centerness", "centerness_box"}
    total.backward()
    assert out["centerness_logits"].grad.abs().sum() > 0
    with pytest.raises(ValueError):
        MaskRCNNLoss(weights={"nope": 1.0})
    with pytest.raises(TypeError):
        loss(torch.zeros(1, 2, 4, 4), lab)
