"""LACSS network parts: crop-and-paste round trip, the model's I/O (LPN targets: tests/targets/test_locations.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from cellseg_monai.networks.lacss import Lacss, match_locations
from cellseg_monai.networks.lacss.segmentor import LacssSegmentor, paste_instances
from cellseg_monai.targets.locations import crop_patches, window_coordinates

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


def _paste_reference(masks, batch_index, centers, scores, shape, min_area=0):
    """The per-instance painting loop (the former implementation), as an independent reference."""
    b, h, w = shape
    k, s, _ = masks.shape
    labels = np.zeros((b, h, w), np.int64)
    score_map = np.zeros((b, h, w), np.float32)
    rows, cols = window_coordinates(centers, s)
    order = torch.argsort(scores, stable=True).tolist()
    rank = torch.empty(k, dtype=torch.int64)
    rank[torch.argsort(scores, descending=True, stable=True)] = torch.arange(k)
    for i in order:  # ascending score: the best is painted last
        for y, x in torch.nonzero(masks[i]).tolist():
            r, c = int(rows[i, y]), int(cols[i, x])
            if 0 <= r < h and 0 <= c < w:
                labels[batch_index[i], r, c] = rank[i] + 1
                score_map[batch_index[i], r, c] = scores[i]
    for bi in range(b):
        ids, counts = np.unique(labels[bi], return_counts=True)
        kept = ids[(ids > 0) & (counts >= max(min_area, 1))]
        lut = np.zeros(k + 1, np.int64)
        lut[kept] = np.arange(1, len(kept) + 1)
        labels[bi] = lut[labels[bi]]
        score_map[bi][labels[bi] == 0] = 0
    return labels, score_map


@pytest.mark.parametrize("seed", range(4))
def test_paste_matches_the_painting_loop(seed):
    g = torch.Generator().manual_seed(seed)
    k, shape = 40, (2, 30, 26)
    masks = torch.rand(k, 9, 9, generator=g) > 0.4
    centers = torch.randint(-3, 32, (k, 2), generator=g)  # some windows partly or wholly outside the image
    scores = torch.randint(0, 5, (k,), generator=g).float() / 4  # many ties
    batch_index = torch.randint(0, 2, (k,), generator=g)
    labels, score_map = paste_instances(masks, batch_index, centers, scores, shape, min_area=6)
    ref_labels, ref_scores = _paste_reference(masks, batch_index, centers, scores, shape, min_area=6)
    np.testing.assert_array_equal(labels.numpy(), ref_labels)
    np.testing.assert_array_equal(score_map.numpy(), ref_scores)


@pytest.mark.parametrize("stride", [1, 2])
def test_segment_masks_equal_thresholded_segment(stride):
    torch.manual_seed(0)
    seg = LacssSegmentor(8, 8, crop_size=16, stride=stride).eval()
    projected = seg.project_features(torch.randn(2, 8, 24, 30))
    centers = torch.tensor([[0, 0], [23, 29], [12, 14], [6, 28], [22, 2], [-1, 4], [24, 30]]) // stride * stride
    batch_index = torch.tensor([0, 1, 0, 1, 1, 0, 1])
    with torch.no_grad():
        expected = torch.sigmoid(seg.segment(projected, batch_index, centers)[:, 0]) > 0.5
        for chunk in (1, 3, 16):
            assert torch.equal(seg.segment_masks(projected, batch_index, centers, 0.5, chunk), expected)
        assert seg.segment_masks(projected, batch_index[:0], centers[:0]).shape == (0, 16, 16)
        # the reduced-precision path runs and mostly agrees (channels-last bfloat16 under autocast)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = seg.segment_masks(projected.bfloat16(), batch_index, centers)
        assert (low == expected).float().mean() > 0.9
