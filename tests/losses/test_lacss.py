"""LACSS losses on hand-made cases (values computed by hand in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cellseg_monai.losses.lacss import (
    LacssLoss,
    aux_boundary_loss,
    instance_edges,
    lpn_loss,
    supervised_segmentation_loss,
    unclicked_foreground,
    weak_segmentation_loss,
)

LN2 = math.log(2.0)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    "offset_pred,expected",
    [
        # grid 1x2 at stride 4, radius 2: the point (1.5, 1.5) is the centre of cell 0, cell 1 (centre x=5.5) is
        # negative. Logits 0 → p = 0.5: focal = ln2 · 0.5² · α_t with α_t = 0.25 (pos) / 0.75 (neg), summed / 1 pos.
        (0.0, 0.25 * 0.25 * LN2 + 0.25 * 0.75 * LN2),
        # offsets 0.5 on both axes, target 0: Huber(0.5) = 0.5 · 0.5² = 0.125 per axis, summed over the 2 axes
        (0.5, 0.25 * LN2 + 0.25),
        # offsets 3 (> delta 1): Huber = 1 · (3 - 0.5) = 2.5 per axis
        (3.0, 0.25 * LN2 + 5.0),
    ],
)
def test_lpn_loss_hand_values(offset_pred, expected):
    logits = torch.zeros(1, 1, 2)
    offsets = torch.full((2, 1, 2), offset_pred)
    value = lpn_loss(logits, offsets, torch.tensor([[1.5, 1.5]]), stride=4, radius=2.0)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_lpn_loss_without_points_is_negatives_only():
    # 2 negative cells at p = 0.5: 2 · 0.75 · 0.25 · ln2, divided by max(1, 0 positives)
    value = lpn_loss(torch.zeros(1, 1, 2), torch.zeros(2, 1, 2), torch.zeros(0, 2), stride=4)
    assert value.item() == pytest.approx(2 * 0.75 * 0.25 * LN2, rel=1e-5)


def test_weak_loss_single_window_is_bce_with_the_mask():
    # one 3x3 window exactly covering a 3x3 image; logits 0 → BCE = ln2 at every pixel; no overlap
    value = weak_segmentation_loss(torch.zeros(1, 3, 3), torch.tensor([[1, 1]]), torch.ones(3, 3))
    assert value.item() == pytest.approx(LN2, rel=1e-5)


def test_weak_loss_outside_the_image_counts_as_background():
    # 3x3 window at (0, 0) of a 2x2 all-foreground image, logits 2: 4 pixels inside (M = 1, BCE = softplus(-2)),
    # 5 outside (M = 0, BCE = softplus(2))
    value = weak_segmentation_loss(torch.full((1, 3, 3), 2.0), torch.tensor([[0, 0]]), torch.ones(2, 2))
    assert value.item() == pytest.approx((4 * _softplus(-2.0) + 5 * _softplus(2.0)) / 9, rel=1e-5)


@pytest.mark.parametrize("overlap_weight", [0.0, 1.0, 2.5])
def test_weak_loss_overlap_penalty_of_two_identical_windows(overlap_weight):
    # two windows at the same place, logits 0 (p = 0.5): max-merge 0 → BCE ln2; each pixel of each window pays
    # p · (-log(1 - p_other)) = 0.5 · ln2
    value = weak_segmentation_loss(
        torch.zeros(2, 3, 3), torch.tensor([[1, 1], [1, 1]]), torch.ones(3, 3), overlap_weight
    )
    assert value.item() == pytest.approx(LN2 + overlap_weight * 0.5 * LN2, rel=1e-5)


def test_weak_loss_uses_the_max_of_the_logits():
    # windows 2 px apart in a 1x... image: pixel claimed by logit 3 and -3 is judged by 3 (foreground → softplus(-3))
    logits = torch.stack([torch.full((3, 3), 3.0), torch.full((3, 3), -3.0)])
    value = weak_segmentation_loss(logits, torch.tensor([[1, 1], [1, 1]]), torch.ones(3, 3), overlap_weight=0.0)
    assert value.item() == pytest.approx(_softplus(-3.0), rel=1e-5)


def test_weak_loss_empty_and_gradient():
    assert weak_segmentation_loss(torch.zeros(0, 3, 3), torch.zeros(0, 2, dtype=torch.long), torch.ones(4, 4)) == 0
    logits = torch.zeros(1, 3, 3, requires_grad=True)
    mask = torch.zeros(3, 3)
    mask[1, 1] = 1
    weak_segmentation_loss(logits, torch.tensor([[1, 1]]), mask).backward()
    assert logits.grad[0, 1, 1] < 0 and logits.grad[0, 0, 0] > 0  # grow into the mask, shrink out of it


def test_supervised_loss_hand_values():
    assert supervised_segmentation_loss(torch.zeros(2, 4, 4), torch.ones(2, 4, 4)).item() == pytest.approx(LN2)
    logits = torch.tensor([[[2.0, -2.0]]])
    value = supervised_segmentation_loss(logits, torch.tensor([[[1.0, 0.0]]]))
    assert value.item() == pytest.approx(_softplus(-2.0), rel=1e-5)


def test_instance_edges_hand_case():
    probs = torch.zeros(1, 3, 3)
    probs[0, 1, 1] = 1.0
    edges, covered = instance_edges(probs, torch.tensor([[1, 1]]), (4, 4))
    # forward differences: |∂y| = [[0,1,0],[0,1,0],[0,0,0]], |∂x| = [[0,0,0],[1,1,0],[0,0,0]]
    expected = np.zeros((4, 4))
    expected[:3, :3] = [[0, 1, 0], [1, 2, 0], [0, 0, 0]]
    np.testing.assert_allclose(edges.numpy(), np.tanh(expected), rtol=1e-6)
    assert covered.sum() == 9 and not covered[3].any()


def test_aux_boundary_loss_hand_case():
    probs = torch.zeros(1, 3, 3)
    probs[0, 1, 1] = 1.0
    # aux logits 0 → e = 0.5 on the 9 covered pixels; E as above
    e = np.tanh(np.array([[0, 1, 0], [1, 2, 0], [0, 0, 0]], float))
    value = aux_boundary_loss(torch.zeros(1, 4, 4), probs, torch.tensor([[1, 1]]))
    assert value.item() == pytest.approx(((0.5 - e) ** 2).mean(), rel=1e-5)


def _fake_output(seg_logits: torch.Tensor, centers: torch.Tensor, batch: torch.Tensor, ids: torch.Tensor) -> dict:
    return {
        "lpn_logits": torch.zeros(2, 1, 1, 1),
        "lpn_offsets": torch.zeros(2, 2, 1, 1),
        "lpn_stride": 4,
        "seg_logits": seg_logits,
        "batch_index": batch,
        "centers": centers,
        "gt_points": centers.float(),
        "point_ids": ids,
        "image_shape": (4, 4),
        "padded_shape": (4, 4),
        "aux_logits": None,
    }


def test_lacss_loss_weak_total_and_reductions():
    # image 0: one window at (1, 1) with logits 0 over an all-foreground 4x4 image, no other window; image 1: none.
    out = _fake_output(torch.zeros(1, 1, 3, 3), torch.tensor([[1, 1]]), torch.tensor([0]), torch.tensor([1]))
    target = torch.zeros(2, 2, 4, 4)
    target[0, 0, 1, 1] = 1
    target[0, 1] = 1
    # LPN per image (grid 1x1, centre (1.5, 1.5)): image 0 positive cell at p = 0.5 → 0.25·0.25·ln2, offset target
    # (-0.125, -0.125) → Huber 2 · 0.5 · 0.125²; image 1 negative cell → 0.75·0.25·ln2
    lpn0 = 0.0625 * LN2 + 0.015625
    lpn1 = 0.1875 * LN2
    per_image = LacssLoss(reduction="none", aux_weight=0.0)(out, target)
    np.testing.assert_allclose(per_image.numpy(), [lpn0 + LN2, lpn1], rtol=1e-5)
    assert LacssLoss(aux_weight=0.0)(out, target).item() == pytest.approx((lpn0 + LN2 + lpn1) / 2, rel=1e-5)
    assert LacssLoss(reduction="sum", aux_weight=0.0, lpn_weight=0.0)(out, target).item() == pytest.approx(LN2)


def test_lacss_loss_supervised_uses_the_true_mask():
    # window at (1, 1), logits +5 on the left column and -5 elsewhere; true cell (id 3) = left column of the window
    logits = torch.full((1, 1, 3, 3), -5.0)
    logits[0, 0, :, 0] = 5.0
    out = _fake_output(logits, torch.tensor([[1, 1]]), torch.tensor([0]), torch.tensor([3]))
    target = torch.zeros(2, 3, 4, 4)
    target[0, 0, 1, 1] = 3
    target[0, 2, 0:3, 0] = 3
    target[0, 2, 1, 1] = 7  # the label under the point wins over the point id: 7 is the cell here
    value = LacssLoss(supervised=True, lpn_weight=0.0, aux_weight=0.0, reduction="none")(out, target)
    # cell 7 occupies only the centre pixel: left column (3 px, logit 5, target 0) + centre (logit -5, target 1)
    # cost softplus(5) each, the other 5 pixels softplus(-5)
    assert value[0].item() == pytest.approx((4 * _softplus(5.0) + 5 * _softplus(-5.0)) / 9, rel=1e-5)


def test_lacss_loss_errors():
    out = _fake_output(
        torch.zeros(0, 1, 3, 3),
        torch.zeros(0, 2, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
    )
    with pytest.raises(TypeError, match="training dict"):
        LacssLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="labels"):
        LacssLoss(supervised=True)(out, torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="target"):
        LacssLoss()(out, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="reduction"):
        LacssLoss(reduction="max")


def test_unclicked_foreground_is_the_components_without_a_point():
    fg = torch.zeros(8, 10)
    fg[1:3, 1:3] = 1  # clicked
    fg[5:7, 6:9] = 1  # not clicked
    fg[3, 3] = 1  # diagonal neighbour of the clicked block: same 8-connected component
    out = unclicked_foreground(fg, torch.tensor([[1.2, 2.4], [40.0, 40.0]]))  # the second point is off the image
    expected = torch.zeros(8, 10, dtype=torch.bool)
    expected[5:7, 6:9] = True
    assert out.dtype == torch.bool and torch.equal(out, expected)
    assert not unclicked_foreground(fg, torch.tensor([[1.0, 1.0], [6.0, 7.0]])).any()
    assert torch.equal(unclicked_foreground(fg, torch.zeros(0, 2)), fg > 0)  # no click: all of it
    # a click on background (a jittered point) vouches for the nearest component: (6, 4) is 2 px from (6, 6)
    assert torch.equal(unclicked_foreground(fg, torch.tensor([[1.0, 1.0], [6.0, 4.0]])), torch.zeros(8, 10) > 0)
    assert not unclicked_foreground(torch.zeros(5, 5), torch.tensor([[2.0, 2.0]])).any()  # no foreground at all


def test_lpn_loss_ignores_the_given_cells_but_never_a_positive():
    # grid 1x2 at stride 4: cell 0 positive (the point), cell 1 negative; ignoring cell 1 drops its focal term
    logits, offsets = torch.zeros(1, 1, 2), torch.zeros(2, 1, 2)
    points = torch.tensor([[1.5, 1.5]])
    full = lpn_loss(logits, offsets, points, stride=4, radius=2.0)
    ignored = lpn_loss(logits, offsets, points, 4, 2.0, ignore=torch.tensor([[False, True]]))
    assert full.item() == pytest.approx(0.25 * 0.25 * LN2 + 0.25 * 0.75 * LN2, rel=1e-5)
    assert ignored.item() == pytest.approx(0.25 * 0.25 * LN2, rel=1e-5)
    kept = lpn_loss(logits, offsets, points, 4, 2.0, ignore=torch.tensor([[True, False]]))  # the positive stays
    assert kept.item() == pytest.approx(full.item(), rel=1e-6)


def test_weak_loss_leaves_the_ignored_pixels_out_of_the_mask_term():
    # one 3x3 window at (1, 1) on a 4x4 all-foreground image, logits 0; ignoring the right column of the window
    # leaves 6 covered pixels with BCE ln2 each: still ln2 on average, and those 3 pixels get no gradient
    logits = torch.zeros(1, 3, 3, requires_grad=True)
    ignore = torch.zeros(4, 4, dtype=torch.bool)
    ignore[:, 2] = True
    value = weak_segmentation_loss(logits, torch.tensor([[1, 1]]), torch.ones(4, 4), 1.0, ignore)
    assert value.item() == pytest.approx(LN2, rel=1e-5)
    value.backward()
    grad = logits.grad[0]
    assert torch.all(grad[:, 2] == 0) and torch.all(grad[:, :2] < 0)  # pushed towards foreground, right column free
    logits2 = torch.full((1, 3, 3), 3.0)
    assert weak_segmentation_loss(logits2, torch.tensor([[1, 1]]), torch.ones(4, 4), 1.0, torch.ones(4, 4) > 0) == 0


def test_lacss_loss_partial_points_frees_the_unclicked_cell():
    # 1 image 8x8, stride 4 → LPN grid 2x2; two foreground blocks: (0..2, 0..2) clicked at (1, 1) and
    # (5..7, 5..7) unclicked. The window (5x5 at (1, 1)) sees only the clicked block; the LPN cell (1, 1) lies on
    # the unclicked block: a negative in full mode, ignored with partial points.
    target = torch.zeros(1, 2, 8, 8)
    target[0, 0, 1, 1] = 1
    target[0, 1, 0:3, 0:3] = 1
    target[0, 1, 5:8, 5:8] = 1
    lpn_logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    out = {
        "lpn_logits": lpn_logits,
        "lpn_offsets": torch.zeros(1, 2, 2, 2),
        "lpn_stride": 4,
        "seg_logits": torch.zeros(1, 1, 5, 5),
        "batch_index": torch.tensor([0]),
        "centers": torch.tensor([[1, 1]]),
        "gt_points": torch.tensor([[1.0, 1.0]]),
        "point_ids": torch.tensor([1]),
        "image_shape": (8, 8),
        "padded_shape": (8, 8),
        "aux_logits": None,
    }
    LacssLoss(aux_weight=0.0, seg_weight=0.0, positive_radius=2.0, partial_points=True)(out, target).backward()
    partial_grad = lpn_logits.grad[0, 0].clone()
    lpn_logits.grad = None
    LacssLoss(aux_weight=0.0, seg_weight=0.0, positive_radius=2.0)(out, target).backward()
    full_grad = lpn_logits.grad[0, 0]
    assert partial_grad[1, 1] == 0 and full_grad[1, 1] > 0  # the unclicked cell is no longer pushed to background
    assert partial_grad[0, 1] > 0 and partial_grad[1, 0] > 0  # background cells still are
    torch.testing.assert_close(partial_grad[0, 0], full_grad[0, 0])  # the clicked cell's positive is unchanged
    # every cell clicked: the partial mode is the full loss
    target[0, 0, 6, 6] = 2
    out["gt_points"] = torch.tensor([[1.0, 1.0], [6.0, 6.0]])
    out["centers"], out["batch_index"] = torch.tensor([[1, 1], [6, 6]]), torch.tensor([0, 0])
    out["seg_logits"], out["point_ids"] = torch.randn(2, 1, 5, 5), torch.tensor([1, 2])
    both = [LacssLoss(aux_weight=0.0, partial_points=p)(out, target) for p in (True, False)]
    torch.testing.assert_close(both[0], both[1])
