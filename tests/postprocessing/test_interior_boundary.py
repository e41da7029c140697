from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellseg_monai.postprocessing.interior_boundary import interior_boundary_to_instances
from cellseg_monai.transforms.interior_boundary import instances_to_interior_boundary

SHAPE = (64, 80)
# (cy, cx, r): a touching pair, a touching triple, two separate discs, one disc cut by the image border
DISCS = [(16, 16, 9), (16, 32, 9), (46, 20, 8), (46, 34, 7), (56, 27, 6), (18, 60, 10), (48, 62, 5), (-2, 44, 7)]


def disc_labels() -> np.ndarray:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    labels = np.zeros(SHAPE, np.int32)
    for k, (cy, cx, r) in enumerate(DISCS, start=1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = k
    return labels


def one_hot(classes: np.ndarray) -> np.ndarray:
    return np.stack([classes == k for k in range(3)]).astype(np.float32)


def best_ious(gt: np.ndarray, pred: np.ndarray) -> dict[int, float]:
    """For each GT instance, the IoU with the predicted instance that overlaps it most (computed directly)."""
    out = {}
    for g in np.setdiff1d(np.unique(gt), [0]):
        inside = pred[gt == g]
        ids, counts = np.unique(inside[inside > 0], return_counts=True)
        if ids.size == 0:
            out[int(g)] = 0.0
            continue
        p = ids[np.argmax(counts)]
        out[int(g)] = float(((gt == g) & (pred == p)).sum() / ((gt == g) | (pred == p)).sum())
    return out


def test_discs_fixture_has_touching_and_separate_instances() -> None:
    labels = disc_labels()
    assert len(np.unique(labels)) - 1 == len(DISCS)
    touching = {
        tuple(sorted((a, b)))
        for a, b in zip(labels[:, :-1].ravel(), labels[:, 1:].ravel(), strict=True)
        if a and b and a != b
    }
    assert {(1, 2), (3, 4), (3, 5), (4, 5)} <= touching
    assert ndi.label(labels > 0)[1] == 5  # 8 discs, 5 connected foreground blobs


@pytest.mark.parametrize("boundary_width", [1, 2, 3])
@pytest.mark.parametrize("blur", [0.0, 1.0])
def test_round_trip_encode_decode(boundary_width: int, blur: float) -> None:
    labels = disc_labels()
    prob = one_hot(instances_to_interior_boundary(labels, boundary_width))
    if blur:  # soft, network-like probabilities that still sum to 1
        prob = np.stack([ndi.gaussian_filter(p, blur) for p in prob])
        prob /= prob.sum(0, keepdims=True)
    pred = interior_boundary_to_instances(prob, min_size=16)
    assert pred.dtype == np.int32 and pred.shape == SHAPE
    assert int(pred.max()) == len(DISCS)
    np.testing.assert_array_equal(np.unique(pred), np.arange(len(DISCS) + 1))  # relabelled 1..N
    ious = best_ious(labels, pred)
    assert min(ious.values()) >= 0.9, ious
    if not blur:
        np.testing.assert_array_equal(pred > 0, labels > 0)  # the watershed loses no foreground pixel


def test_hand_made_case_exact() -> None:
    # two touching 6x6 squares (1 px boundary each) and a separate square; numbered in raster order
    classes = np.zeros((10, 20), np.int64)
    classes[1:7, 1:13] = 2
    classes[2:6, 2:6] = classes[2:6, 8:12] = 1
    classes[3:9, 14:19] = 2
    classes[4:8, 15:18] = 1
    expected = np.zeros((10, 20), np.int32)
    expected[1:7, 1:7], expected[1:7, 7:13], expected[3:9, 14:19] = 1, 2, 3
    np.testing.assert_array_equal(interior_boundary_to_instances(one_hot(classes), min_size=9), expected)


def test_boundary_only_object_kept_or_dropped() -> None:
    classes = np.zeros((12, 12), np.int64)
    classes[2:8, 2:8] = 2  # 36 px of boundary and no interior (no seed)
    prob = one_hot(classes)
    kept = interior_boundary_to_instances(prob, min_size=16)
    np.testing.assert_array_equal(kept, (classes == 2).astype(np.int32))
    assert interior_boundary_to_instances(prob, min_size=16, keep_unseeded=False).max() == 0
    assert interior_boundary_to_instances(prob, min_size=37).max() == 0  # too small to keep


def test_tiny_seed_does_not_split_a_nucleus() -> None:
    classes = np.zeros((14, 20), np.int64)
    classes[1:13, 1:19] = 2
    classes[3:11, 3:11] = 1  # the real interior
    classes[6, 15] = 1  # a single noisy interior pixel in the boundary band
    pred = interior_boundary_to_instances(one_hot(classes), seed_min_size=4)
    assert pred.max() == 1 and (pred > 0).sum() == 12 * 18
    assert interior_boundary_to_instances(one_hot(classes), seed_min_size=1, min_size=1).max() == 2


def test_small_fragment_merged_not_deleted() -> None:
    # a 9 px seed beside a big object floods a 73 px fragment, below min_size = 80: it joins its neighbour
    classes = np.zeros((16, 24), np.int64)
    classes[1:15, 1:23] = 2
    classes[3:13, 3:15] = 1
    classes[6:9, 18:21] = 1  # separate small seed, walled off by a boundary column
    pred = interior_boundary_to_instances(one_hot(classes), min_size=80, seed_min_size=4)
    assert pred.max() == 1 and (pred > 0).sum() == 14 * 22  # no hole bitten out
    assert interior_boundary_to_instances(one_hot(classes), min_size=70, seed_min_size=4).max() == 2


@pytest.mark.parametrize(
    "fg_threshold,expected_pixels",
    [(0.5, 36), (0.7, 16)],  # boundary ring has P(fg) = 0.6, interior 1.0
)
def test_foreground_threshold(fg_threshold: float, expected_pixels: int) -> None:
    prob = np.zeros((3, 10, 10), np.float32)
    prob[0] = 1.0
    prob[:, 2:8, 2:8] = np.array([0.4, 0.0, 0.6])[:, None, None]
    prob[:, 3:7, 3:7] = np.array([0.0, 1.0, 0.0])[:, None, None]
    pred = interior_boundary_to_instances(prob, foreground_threshold=fg_threshold, min_size=4)
    assert pred.max() == 1 and (pred > 0).sum() == expected_pixels


def test_empty_prediction() -> None:
    prob = np.zeros((3, 8, 8), np.float32)
    prob[0] = 1.0
    out = interior_boundary_to_instances(prob)
    assert out.dtype == np.int32 and out.shape == (8, 8) and out.max() == 0


@pytest.mark.parametrize(
    "prob,kwargs,error,match",
    [
        (np.zeros((8, 8)), {}, ValueError, r"\(3, H, W\)"),
        (np.zeros((2, 8, 8)), {}, ValueError, r"\(3, H, W\)"),
        (np.full((3, 8, 8), np.nan), {}, ValueError, "NaN"),
        (np.full((3, 8, 8), "a"), {}, TypeError, "numeric"),
        (np.zeros((3, 8, 8)), {"interior_threshold": 1.5}, ValueError, "interior_threshold"),
        (np.zeros((3, 8, 8)), {"foreground_threshold": -0.1}, ValueError, "foreground_threshold"),
        (np.zeros((3, 8, 8)), {"min_size": -1}, ValueError, "min_size"),
        (np.zeros((3, 8, 8)), {"connectivity": 3}, ValueError, "connectivity"),
    ],
)
def test_bad_input(prob: np.ndarray, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        interior_boundary_to_instances(prob, **kwargs)
