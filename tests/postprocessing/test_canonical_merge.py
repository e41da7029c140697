from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.utils import convert_to_numpy

from cellseg_monai.postprocessing.canonical_merge import (
    affine_table,
    canonical_instances,
    canonical_point_instances,
    merge_groups,
)

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


# the dense implementation these functions replaced (whole-image masks, a (K, K) matmul per merge), kept as the
# independent reference of the pixel-list implementation
def _dense_merge_groups(binary: np.ndarray, overlap: float = 0.5, score: np.ndarray | None = None) -> list[list[int]]:
    binary = np.asarray(binary, dtype=bool)
    if binary.ndim != 3:
        raise ValueError(f"binary must be (K, H, W); got shape {binary.shape}.")
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap must be in (0, 1]; got {overlap!r}.")
    k = binary.shape[0]
    score = np.zeros(k) if score is None else np.array(score, dtype=float).reshape(k)
    flat = binary.reshape(k, -1).astype(np.float64)
    area = flat.sum(1)
    alive = area > 0
    members: dict[int, list[int]] = {i: [i] for i in range(k) if alive[i]}
    if len(members) < 2:
        return sorted(members.values())
    inter = flat @ flat.T
    order = np.arange(k)
    with np.errstate(divide="ignore", invalid="ignore"):
        while True:
            # smaller[a, b]: a is the smaller instance m of the pair (area, then score, then the higher index)
            area_a, area_b = area[:, None], area[None, :]
            score_a, score_b = score[:, None], score[None, :]
            smaller = (area_a < area_b) | (
                (area_a == area_b) & ((score_a < score_b) | ((score_a == score_b) & (order[:, None] > order[None, :])))
            )
            ratio = np.where(smaller & alive[:, None] & alive[None, :], inter / area_a, -1.0)
            m, b = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            if ratio[m, b] < overlap - 1e-12:
                break
            flat[b] = np.maximum(flat[b], flat[m])
            area[b] = flat[b].sum()
            score[b] = max(score[b], score[m])
            alive[m] = False
            members[int(b)].extend(members.pop(int(m)))
            inter[b] = flat @ flat[b]
            inter[:, b] = inter[b]
    return sorted((sorted(g) for g in members.values()), key=lambda g: g[0])


def _dense_canonical_instances(
    masks: np.ndarray,
    presence: np.ndarray | None = None,
    threshold: float = 0.5,
    overlap: float = 0.5,
    min_area: int = 1,
    merge: bool = True,
    return_groups: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[list[int]]]:
    prob = convert_to_numpy(masks).astype(np.float64)
    if prob.ndim != 3:
        raise ValueError(f"masks must be (N, H, W); got shape {prob.shape}.")
    if presence is not None:
        pres = convert_to_numpy(presence).astype(np.float64).reshape(-1)
        if pres.shape[0] != prob.shape[0]:
            raise ValueError(f"presence must have N = {prob.shape[0]} values; got {pres.shape[0]}.")
        prob = prob * pres[:, None, None]
    binary = prob > threshold
    labels = np.zeros(prob.shape[1:], dtype=np.int32)
    kept: list[list[int]] = []
    if not binary.any():
        return (labels, kept) if return_groups else labels
    if merge:
        groups = _dense_merge_groups(binary, overlap, score=(prob * binary).reshape(len(prob), -1).sum(1))
    else:
        groups = [[i] for i in range(len(prob)) if binary[i].any()]
    gbin = np.stack([binary[g].any(0) for g in groups])
    gprob = np.stack([np.where(binary[g], prob[g], 0.0).max(0) for g in groups])
    gprob[~gbin] = -np.inf
    winner = gprob.argmax(0)
    fg = gbin.any(0)
    next_id = 1
    for j in range(len(groups)):
        sel = fg & (winner == j)
        if sel.sum() >= max(1, min_area):
            labels[sel] = next_id
            kept.append(list(groups[j]))
            next_id += 1
    return (labels, kept) if return_groups else labels


def _random_instances(seed: int, k: int = 12, size: int = 48) -> np.ndarray:
    """(k, size, size) probabilities: overlapping discs and rectangles, some equal-area pairs, a few empty."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((k, size, size))
    for i in range(k):
        cy, cx = rng.integers(4, size - 4, 2)
        if i % 3 == 0:
            r = rng.uniform(2, 9)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            h, w = rng.integers(2, 12, 2)
            m = (abs(yy - cy) <= h) & (abs(xx - cx) <= w)
        if i % 5 == 4:  # a copy of an earlier instance shifted by a pixel: the duplicates P merges
            m = np.roll(masks[i - 1] > 0, 1, axis=int(rng.integers(2)))
        masks[i] = np.where(m, rng.choice([0.6, 0.8, 0.9], size=m.shape), 0.0)
    masks[rng.integers(k)] = 0.0
    return masks


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("merge,overlap,min_area", [(True, 0.5, 1), (True, 0.3, 10), (False, 0.5, 5)])
def test_pixel_lists_equal_the_dense_reference(seed, merge, overlap, min_area):
    masks = _random_instances(seed)
    expected, expected_groups = _dense_canonical_instances(masks, None, 0.5, overlap, min_area, merge, True)
    labels, groups = canonical_instances(masks, None, 0.5, overlap, min_area, merge, True)
    np.testing.assert_array_equal(labels, expected)
    assert groups == expected_groups
    binary = masks > 0.5
    assert merge_groups(binary, overlap) == _dense_merge_groups(binary, overlap)
    # the same instances given on boxes only (with pixels below the threshold inside the boxes)
    index, pixels, prob = [], [], []
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m > 0)
        if len(ys) == 0:
            continue
        by, bx = np.mgrid[max(0, ys.min() - 2) : ys.max() + 3, max(0, xs.min() - 2) : xs.max() + 3]
        by, bx = by.clip(max=m.shape[0] - 1).ravel(), bx.clip(max=m.shape[1] - 1).ravel()
        flat = np.unique(by * m.shape[1] + bx)
        index.append(np.full(len(flat), i))
        pixels.append(flat)
        prob.append(m.reshape(-1)[flat])
    out = canonical_point_instances(
        np.concatenate(index),
        np.concatenate(pixels),
        np.concatenate(prob),
        len(masks),
        masks.shape[1:],
        0.5,
        overlap,
        min_area,
        merge,
        True,
    )
    np.testing.assert_array_equal(out[0], expected)
    assert out[1] == expected_groups
