"""Boxes of instance labels (against skimage) and per-pixel anchors (hand-made)."""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import regionprops

from cellseg_monai.targets.boxes import instance_boxes, pixel_anchors


def test_instance_boxes_match_skimage():
    lab = np.zeros((20, 30), np.int32)
    lab[2:5, 3:9] = 4
    lab[10:18, 20:29] = 1
    lab[12, 0] = 7
    boxes, ids = instance_boxes(torch.as_tensor(lab)[None])
    ref = {r.label: r.bbox for r in regionprops(lab)}  # (min_row, min_col, max_row, max_col), exclusive max
    assert ids.tolist() == sorted(ref)
    for b, i in zip(boxes.tolist(), ids.tolist(), strict=True):
        assert tuple(b) == ref[i]
    empty, none = instance_boxes(np.zeros((4, 4), int))
    assert empty.shape == (0, 4) and none.numel() == 0


def test_pixel_anchors_hand_made():
    a = pixel_anchors(2, 3, 4, (10.0, 6.0))
    # centres at i*4 + 2: rows (2, 6), cols (2, 6, 10); row-major order
    assert a.shape == (6, 4)
    np.testing.assert_allclose(a[0].numpy(), [2 - 5, 2 - 3, 2 + 5, 2 + 3])
    np.testing.assert_allclose(a[5].numpy(), [6 - 5, 10 - 3, 6 + 5, 10 + 3])
