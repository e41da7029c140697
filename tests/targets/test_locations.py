"""LACSS locations: LPN targets (hand cases, encode → decode round trip) and crop windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.postprocessing.nms import distance_nms
from cellseg_monai.targets.locations import crop_patches, decode_lpn, encode_lpn_targets, grid_centers


def test_grid_centers_hand_case():
    c = grid_centers(2, 3, 4)
    assert c.shape == (2, 3, 2)
    np.testing.assert_allclose(c[1, 2].numpy(), [5.5, 9.5])  # cell (1, 2) covers rows 4..7, cols 8..11


def test_encode_lpn_targets_hand_case():
    # stride 4, radius 4: the point (1.5, 1.5) is the centre of cell (0, 0); cells (0, 1) and (1, 0) are 4 px away
    score, offset = encode_lpn_targets(torch.tensor([[1.5, 1.5]]), (2, 2), 4, radius=4.0)
    np.testing.assert_array_equal(score[0].numpy(), [[1, 1], [1, 0]])
    np.testing.assert_allclose(offset[:, 0, 0].numpy(), [0, 0])
    np.testing.assert_allclose(offset[:, 0, 1].numpy(), [0, -1])  # (1.5 - 1.5, 1.5 - 5.5) / 4
    np.testing.assert_allclose(offset[:, 1, 1].numpy(), [-1, -1])
    score, offset = encode_lpn_targets(torch.zeros(0, 2), (2, 2), 4)
    assert score.sum() == 0 and offset.abs().sum() == 0


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_lpn_encode_decode_round_trip(stride):
    rng = np.random.default_rng(stride)
    h = w = 64
    # every positive cell decodes exactly onto its nearest point, so NMS with a 1 px radius leaves one per point
    pts = rng.uniform(0, h - 1, size=(8, 2))
    pts = pts[[i for i in range(8) if all(np.hypot(*(pts[i] - pts[j])) > 3 for j in range(i))]]
    score, offset = encode_lpn_targets(torch.tensor(pts, dtype=torch.float32), (h // stride, w // stride), stride)
    loc, sc = decode_lpn(score[None], offset[None], stride)
    keep = distance_nms(loc[0], sc[0], min_distance=1.0, score_threshold=0.5)
    got = loc[0, keep].numpy()
    assert len(got) == len(pts)
    d = np.hypot(*(got[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
    assert np.all(d.min(axis=1) < 1e-4) and np.all(d.min(axis=0) < 1e-4)


def test_crop_is_zero_outside_the_image():
    maps = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) + 1
    crop = crop_patches(maps, torch.tensor([0]), torch.tensor([[0, 0]]), 3)[0, 0]
    np.testing.assert_array_equal(crop.numpy(), [[0, 0, 0], [0, 1, 2], [0, 5, 6]])
