"""Tile then stitch (STYLE habit 12): an image several tiles wide goes through the sliding-window inferer the bundles
use and the post-processing, and every instance comes back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer

from cellseg_monai.metrics import match_labels
from cellseg_monai.transforms import ProbabilityToInstancesd


def _discs(shape=(600, 700), n=60, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    k = 0
    while k < n:
        cy, cx, r = rng.integers(12, shape[0] - 12), rng.integers(12, shape[1] - 12), rng.integers(6, 11)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        grown = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 3) ** 2
        if labels[grown].any():  # keep discs apart so the expected instances are unambiguous
            continue
        k += 1
        labels[disc] = k
    return labels


@pytest.mark.parametrize("roi, overlap", [((128, 128), 0.25), ((256, 256), 0.5), ((96, 160), 0.0)])
def test_instances_survive_tiling_and_stitching(roi, overlap):
    labels = _discs()
    image = torch.as_tensor((labels > 0).astype(np.float32))[None, None]  # (1, 1, H, W)

    def network(x: torch.Tensor) -> torch.Tensor:  # a per-pixel "probability" that depends on the tile's content
        return torch.sigmoid(20 * (x - 0.5))

    prob = SlidingWindowInferer(roi_size=roi, sw_batch_size=4, overlap=overlap, mode="gaussian")(image, network)
    assert prob.shape == image.shape
    out = ProbabilityToInstancesd(keys="fg_prob", output_key="pred", min_size=16)({"fg_prob": prob[0]})
    pred = np.asarray(out["pred"][0])
    m = match_labels(labels, pred, threshold=0.9)
    assert m.tp == labels.max() and m.fp == 0 and m.fn == 0
