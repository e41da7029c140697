from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.networks.mask_rcnn.roi_align import RoIAlign, _bin_mean, roi_align


def _bilinear(f: np.ndarray, y: float, x: float) -> float:
    """Hand-written bilinear sample of (H, W) at index coordinates, border-clamped."""
    h, w = f.shape
    y, x = min(max(y, 0.0), h - 1), min(max(x, 0.0), w - 1)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    ly, lx = y - y0, x - x0
    return (1 - ly) * (1 - lx) * f[y0, x0] + (1 - ly) * lx * f[y0, x1] + ly * (1 - lx) * f[y1, x0] + ly * lx * f[y1, x1]


def _reference(f, box, out, scale, sr, aligned):
    y0, x0, y1, x1 = (v * scale - (0.5 if aligned else 0.0) for v in box)
    if not aligned:
        y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
    bh, bw = (y1 - y0) / out, (x1 - x0) / out
    res = np.zeros((out, out))
    for p in range(out):
        for q in range(out):
            vals = [
                _bilinear(f, y0 + (p + (i + 0.5) / sr) * bh, x0 + (q + (j + 0.5) / sr) * bw)
                for i in range(sr)
                for j in range(sr)
            ]
            res[p, q] = np.mean(vals)
    return res


F4 = np.arange(16, dtype=np.float32).reshape(4, 4)  # value = 4 * row + col


@pytest.mark.parametrize(
    "box, out, scale, sr, aligned, expected",
    [
        # box centre (2, 2) image px -> index (1.5, 1.5) with the half-pixel shift -> 4*1.5 + 1.5
        ((1.0, 1.0, 3.0, 3.0), 1, 1.0, 1, True, [[7.5]]),
        # whole map, 2x2 bins: sample points at index 0.5 and 2.5
        ((0.0, 0.0, 4.0, 4.0), 2, 1.0, 1, True, [[2.5, 4.5], [10.5, 12.5]]),
        # stride 2 (scale 0.5): image box (2, 2, 6, 6) -> index (0.5..2.5) -> centre 1.5
        ((2.0, 2.0, 6.0, 6.0), 1, 0.5, 1, True, [[7.5]]),
        # not aligned: index box (1..3) centre 2 -> 4*2 + 2
        ((1.0, 1.0, 3.0, 3.0), 1, 1.0, 1, False, [[10.0]]),
        # two samples per side averaged: points 1.0 and 2.0 (aligned) -> mean 4*1.5 + 1.5
        ((1.0, 1.0, 3.0, 3.0), 1, 1.0, 2, True, [[7.5]]),
        # one row, two samples at x index 0.25 and 0.75 of row 0.5 -> (2 + 0.25 + 2 + 0.75) / 2
        ((0.0, 0.0, 2.0, 2.0), 1, 1.0, 2, True, [[2.5]]),
    ],
)
def test_hand_computed(box, out, scale, sr, aligned, expected):
    f = torch.as_tensor(F4)[None, None]
    got = roi_align(f, [torch.tensor([box])], out, scale, sr, aligned)
    np.testing.assert_allclose(got[0, 0].numpy(), np.array(expected), atol=1e-5)


def test_random_boxes_against_loop_reference_and_batch_routing():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 3, 9, 11)).astype(np.float32)
    rows = []
    for _ in range(6):
        y0, x0 = rng.uniform(-2, 20, 2)
        rows.append([rng.integers(0, 2), y0, x0, y0 + rng.uniform(0.5, 15), x0 + rng.uniform(0.5, 15)])
    rois = torch.tensor(rows, dtype=torch.float32)
    got = RoIAlign(3, spatial_scale=0.5, sampling_ratio=2)(torch.as_tensor(feats), rois).numpy()
    for k, r in enumerate(rows):
        for c in range(3):
            ref = _reference(feats[int(r[0]), c], r[1:], 3, 0.5, 2, True)
            np.testing.assert_allclose(got[k, c], ref, atol=1e-4)


def test_gradient_and_empty_and_errors():
    f = torch.rand(1, 2, 5, 5, requires_grad=True)
    roi_align(f, [torch.tensor([[0.0, 0.0, 3.0, 3.0]])], 2).sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert roi_align(f, torch.zeros((0, 5)), 7).shape == (0, 2, 7, 7)
    with pytest.raises(ValueError):
        roi_align(f, torch.zeros((3, 4)), 2)
    with pytest.raises(ValueError):
        roi_align(f, [torch.tensor([[0.0, 0.0, 3.0, 3.0]])], 2, sampling_ratio=0)


@pytest.mark.parametrize("sr", [1, 2, 3])
def test_bin_mean_equals_mean(sr):
    samples = torch.randn(3, 5, 4, sr, 6, sr, generator=torch.Generator().manual_seed(sr))
    want = samples.mean(dim=(3, 5))
    got = _bin_mean(samples, sr)
    if sr <= 2:  # the same pairwise sums: bit-identical
        assert torch.equal(got, want)
    torch.testing.assert_close(got, want)
