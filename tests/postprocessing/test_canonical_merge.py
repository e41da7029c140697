from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cellseg_monai.postprocessing.canonical_merge import affine_table, canonical_instances, merge_groups

H = W = 40


def _mask(flat_ranges):
    """(H, W) bool mask with the given [start, stop) ranges of flat pixel indices set."""
    m = np.zeros(H * W, dtype=bool)
    for a, b in flat_ranges:
        m[a:b] = True
    return m.reshape(H, W)


def _pair(inter):
    """b = 400 px; m = 100 px of which ``inter`` lie inside b."""
    b = _mask([(0, 400)])
    m = _mask([(400 - inter, 400 - inter + 100)])
    assert b.sum() == 400 and m.sum() == 100 and (b & m).sum() == inter
    return np.stack([b, m])


@pytest.mark.parametrize("inter,merged", [(50, True), (49, False), (100, True), (0, False), (51, True)])
def test_merge_rule_threshold(inter, merged):
    binary = _pair(inter)
    groups = merge_groups(binary, overlap=0.5)
    assert groups == ([[0, 1]] if merged else [[0], [1]])
    labels = canonical_instances(binary * 0.9)
    assert labels.dtype == np.int32
    assert labels.max() == (1 if merged else 2)
    if merged:  # the union is one instance
        np.testing.assert_array_equal(labels > 0, binary.any(0))


def test_merge_order_smaller_into_bigger():
    # m (100 px) lies 50 % inside b (400 px): 50/100 >= 0.5 merges; b's side 50/400 alone would not matter
    binary = _pair(50)[::-1].copy()  # smaller one first in the stack
    assert merge_groups(binary) == [[0, 1]]


def test_repeat_until_stable():
    b = _mask([(0, 400)])  # 400 px
    m1 = _mask([(369, 429)])  # 60 px, 31 inside b (0.517 -> merges)
    m2 = _mask([(344, 369), (400, 475)])  # 100 px: 25 in b (0.25), 29 in m1 (m1 is smaller), 54 in b ∪ m1 (0.54)
    assert (m1 & b).sum() == 31 and (m2 & b).sum() == 25 and (m2 & m1).sum() == 29 and m2.sum() == 100
    binary = np.stack([b, m1, m2])
    assert merge_groups(binary) == [[0, 1, 2]]
    assert canonical_instances(binary * 0.9).max() == 1
    assert canonical_instances(binary * 0.9, merge=False).max() == 3  # "without P": no merging


def test_overlap_goes_to_higher_probability():
    a = np.zeros((H, W))
    b = np.zeros((H, W))
    a[5:15, 5:15] = 0.9
    b[10:20, 10:20] = 0.7  # overlap 25 px of 100: no merge
    b[12:15, 12:15] = 0.95  # part of the overlap where b is more probable
    labels = canonical_instances(np.stack([a, b]))
    expected = np.zeros((H, W), dtype=np.int32)
    expected[10:20, 10:20] = 2
    expected[5:15, 5:15] = 1
    expected[12:15, 12:15] = 2
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize(
    "presence,threshold,n_labels",
    [([1.0, 1.0], 0.5, 2), ([0.5, 1.0], 0.5, 1), ([0.5, 0.5], 0.5, 0), ([0.5, 0.5], 0.4, 2)],
)
def test_presence_and_threshold(presence, threshold, n_labels):
    masks = np.zeros((2, H, W))
    masks[0, 2:8, 2:8] = 0.9
    masks[1, 20:30, 20:30] = 0.9
    labels = canonical_instances(torch.tensor(masks), presence=torch.tensor(presence), threshold=threshold)
    assert labels.max() == n_labels and len(np.unique(labels)) == n_labels + 1


def test_min_area_and_consecutive_labels():
    masks = np.zeros((3, H, W))
    masks[0, 0:2, 0:2] = 0.9  # 4 px
    masks[1, 10:20, 10:20] = 0.9
    masks[2, 30:35, 30:35] = 0.9
    labels = canonical_instances(masks, min_area=5)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert (labels[0:2, 0:2] == 0).all() and (labels[10:20, 10:20] == 1).all() and (labels[30:35, 30:35] == 2).all()


def test_errors():
    with pytest.raises(ValueError):
        canonical_instances(np.zeros((H, W)))
    with pytest.raises(ValueError):
        canonical_instances(np.zeros((2, H, W)), presence=np.ones(3))
    with pytest.raises(ValueError):
        merge_groups(np.zeros((2, H, W), dtype=bool), overlap=0.0)
    with pytest.raises(ValueError, match="L"):
        affine_table({"t": np.zeros((1, 2))})


def _rot(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


@pytest.mark.parametrize("deg,a,b", [(30.0, 3.0, 1.0), (-60.0, 5.0, 2.0), (0.0, 4.0, 4.0 - 1e-9), (90.0, 2.0, 1.0)])
def test_affine_table_against_ellipse(deg, a, b):
    # an ellipse with semi-axes a, b rotated by deg: shape matrix S = R diag(a², b²) Rᵀ; its Cholesky factor is a
    # lower-triangular L with positive diagonal and L Lᵀ = S, i.e. L maps the unit circle onto that ellipse
    S = _rot(deg) @ np.diag([a * a, b * b]) @ _rot(deg).T
    L = np.linalg.cholesky(S)
    params = {
        "L": torch.tensor(L[None, None]),
        "t": torch.tensor([[[1.5, -2.0]]]),
        "centre": torch.tensor([[[24.0, 40.0]]]),
        "presence": torch.tensor([[0.7]]),
    }
    (row,) = affine_table(params)
    assert row["instance"] == 0 and row["presence"] == pytest.approx(0.7)
    assert (row["x"], row["y"], row["tx"], row["ty"]) == pytest.approx((25.5, 38.0, 1.5, -2.0))
    assert row["axis_major"] == pytest.approx(a) and row["axis_minor"] == pytest.approx(b)
    if a - b > 1e-6:
        expected = deg if deg > -90 else deg + 180
        assert row["rotation_deg"] == pytest.approx(expected, abs=1e-6)
    assert (row["scale_x"], row["scale_y"]) == pytest.approx((L[0, 0], L[1, 1]))
    assert row["shear"] == pytest.approx(L[1, 0] / L[0, 0])
    # the triangular decomposition reproduces L: [[1, 0], [k, 1]] diag(sx, sy)
    recon = np.array([[1.0, 0.0], [row["shear"], 1.0]]) @ np.diag([row["scale_x"], row["scale_y"]])
    np.testing.assert_allclose(recon, L, atol=1e-9)


def test_affine_table_filters_and_unbatched():
    params = {
        "L": np.stack([np.eye(2) * 3, np.eye(2) * 5]),
        "t": np.zeros((2, 2)),
        "centre": np.array([[8.0, 8.0], [24.0, 8.0]]),
        "presence": np.array([0.9, 0.05]),
    }
    rows = affine_table(params, min_presence=0.5)
    assert [r["instance"] for r in rows] == [0]
    assert len(affine_table(params)) == 2
