"""LACSS network parts: crop-and-paste round trip, the model's I/O (LPN targets: tests/targets/test_locations.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from cellseg_monai.networks.lacss import Lacss, match_locations
from cellseg_monai.networks.lacss.segmentor import paste_instances
from cellseg_monai.targets.locations import crop_patches

TINY = {"features": (8, 16, 32), "feature_channels": 8, "seg_hidden": 8, "crop_size": 16}


def _disc_labels() -> np.ndarray:
    yy, xx = np.mgrid[:48, :40]
    lab = np.zeros((48, 40), np.int64)
    for i, (cy, cx, r) in enumerate([(8, 8, 5), (30, 12, 6), (20, 30, 4), (42, 34, 3)], start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return lab


def test_crop_and_paste_round_trip():
    lab = _disc_labels()
    ids = np.arange(1, lab.max() + 1)
    centres = np.round(np.array(ndi.center_of_mass(np.ones_like(lab), lab, ids))).astype(int)
    onehot = torch.as_tensor(np.stack([lab == i for i in ids]).astype(np.float32))[:, None]  # (N, 1, H, W)
    n = len(ids)
    # crop window k out of the one-hot map of instance k (batch index k of an N-image batch)
    crops = crop_patches(onehot, torch.arange(n), torch.as_tensor(centres), 16)[:, 0]
    assert crops.shape == (n, 16, 16)
    labels, score_map = paste_instances(
        crops > 0.5, torch.zeros(n, dtype=torch.int64), torch.as_tensor(centres), torch.rand(n), (1, 48, 40)
    )
    out = labels[0].numpy()
    assert out.max() == n
    for i in ids:  # each GT instance comes back as exactly one predicted instance with the same pixels
        pred_ids = np.unique(out[lab == i])
        assert len(pred_ids) == 1 and pred_ids[0] > 0
        np.testing.assert_array_equal(out == pred_ids[0], lab == i)
    assert (score_map[0].numpy()[lab == 0] == 0).all()


def test_paste_overlap_goes_to_higher_score_and_min_area():
    masks = torch.zeros(3, 3, 3, dtype=torch.bool)
    masks[0] = True
    masks[1] = True
    masks[2, 1, 1] = True
    centres = torch.tensor([[1, 1], [1, 2], [5, 5]])
    labels, score_map = paste_instances(
        masks, torch.zeros(3, dtype=torch.int64), centres, torch.tensor([0.4, 0.9, 0.5]), (1, 7, 7), min_area=2
    )
    expected = np.zeros((7, 7), int)
    expected[0:3, 0:1] = 2  # the low-score square keeps only the column the high-score one does not cover
    expected[0:3, 1:4] = 1  # the 0.9 square is id 1 (ids follow decreasing score); the 1-pixel mask is removed
    np.testing.assert_array_equal(labels[0].numpy(), expected)
    np.testing.assert_allclose(score_map[0, 0, :4].numpy(), [0.4, 0.9, 0.9, 0.9])


def test_match_locations_hand_case():
    gt = torch.tensor([[0.0, 0.0], [10.0, 10.0], [30.0, 30.0], [11.0, 11.0]])
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0], [10.0, 12.0], [50.0, 50.0]])
    scores = torch.tensor([0.6, 0.9, 0.8, 0.99])
    loc, replaced = match_locations(gt, pred, scores, max_offset=3.0)
    # gt0 -> best score within 3 px: pred1 (0.9); gt1 and gt3 both want pred2: the nearer (gt3, 1.4 px) gets it
    np.testing.assert_allclose(loc.numpy(), [[0, 2], [10, 10], [30, 30], [10, 12]])
    assert replaced.tolist() == [True, False, False, True]
    loc, replaced = match_locations(gt, pred, scores, max_offset=3.0, min_score=0.95)
    assert not replaced.any() and torch.equal(loc, gt)


@pytest.mark.parametrize("shape", [(32, 32), (37, 45)])
def test_inference_returns_labels_and_scores(shape):
    torch.manual_seed(0)
    net = Lacss(3, score_threshold=0.0, max_instances=20, min_area=0, **TINY).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, *shape))
    assert y.shape == (2, 2, *shape) and y.dtype == torch.float32
    labels, scores = y[:, 0], y[:, 1]
    assert torch.equal(labels, labels.round()) and labels.min() >= 0
    assert ((scores > 0) == (labels > 0)).all() and scores.max() <= 1


def test_training_dict_and_gradients_reach_every_part():
    from cellseg_monai.losses.lacss import LacssLoss

    torch.manual_seed(0)
    net = Lacss(3, **TINY).train()
    points = torch.zeros(2, 1, 32, 32)
    points[0, 0, 8, 8], points[1, 0, 20, 10], points[1, 0, 5, 25] = 1, 2, 3
    out = net(torch.rand(2, 3, 32, 32), points=points)
    assert out["seg_logits"].shape == (3, 1, 16, 16) and out["lpn_logits"].shape == (2, 1, 8, 8)
    assert out["aux_logits"].shape == (2, 1, 32, 32) and sorted(out["point_ids"].tolist()) == [1, 2, 3]
    target = torch.cat([points, (torch.rand(2, 1, 32, 32) > 0.5).float()], dim=1)
    LacssLoss()(out, target).backward()
    for name in ("backbone", "lpn", "segmentor", "auxnet"):
        grads = [p.grad for p in getattr(net, name).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name


def test_resnet50_backbone_option():
    net = Lacss(3, backbone="resnet50", feature_channels=8, seg_hidden=8, crop_size=16).eval()
    assert net.size_divisor == 32
    with torch.no_grad():
        assert net(torch.rand(1, 3, 40, 50)).shape == (1, 2, 40, 50)


def test_bad_arguments():
    with pytest.raises(ValueError):
        Lacss(3, backbone="vgg")
    with pytest.raises(ValueError):
        Lacss(3, lpn_stride=3)
    with pytest.raises(ValueError):
        Lacss(3, **TINY)(torch.rand(3, 32, 32))


def test_segmentor_stride_two_keeps_windows_aligned():
    # a window's logits at stride 2 are upsampled back to S × S and centred on the (even) snapped location
    torch.manual_seed(0)
    net = Lacss(3, **{**TINY, "crop_size": 16}, seg_stride=2, score_threshold=0.0, max_instances=5, min_area=0)
    assert net.segmentor.snap(torch.tensor([[3.2, 4.9]])).tolist() == [[4, 4]]
    points = torch.zeros(1, 1, 32, 32)
    points[0, 0, 9, 11] = 1
    out = net.train()(torch.rand(1, 3, 32, 32), points=points)
    assert out["seg_logits"].shape == (1, 1, 16, 16) and out["centers"].remainder(2).sum() == 0
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 3, 30, 34)).shape == (1, 2, 30, 34)
    with pytest.raises(ValueError):
        Lacss(3, **{**TINY, "crop_size": 18}, seg_stride=2)
