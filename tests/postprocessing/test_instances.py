from __future__ import annotations

import numpy as np
import pytest

from cellseg_monai.postprocessing.instances import labels_on_border, mask_to_instances, probability_to_instances


def disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# (radius, distance between centres): the two discs overlap (touch along a neck)
TOUCHING_CASES = [(10, 17), (10, 14), (6, 10), (5, 8), (18, 30)]


@pytest.mark.parametrize("r,d", TOUCHING_CASES)
def test_touching_discs_split_by_watershed_merged_without(r: int, d: int) -> None:
    shape = (2 * r + 20, 2 * r + d + 20)
    a, b = disc(shape, r + 10, r + 10, r), disc(shape, r + 10, r + 10 + d, r)
    union = a | b
    prob = union * 0.9

    split = probability_to_instances(prob)
    assert split.dtype == np.int32
    assert split.max() == 2
    np.testing.assert_array_equal(split > 0, union)  # the watershed loses no foreground pixel
    left, right = split[r + 10, r + 10], split[r + 10, r + 10 + d]
    assert {left, right} == {1, 2}
    # each object is its own disc, except for the shared lens
    assert iou(split == left, a & ~b) > 0.8 and iou(split == right, b & ~a) > 0.8

    merged = probability_to_instances(prob, watershed=False)
    np.testing.assert_array_equal(merged, union.astype(np.int32))


def test_watershed_fragments_below_min_size_merge_instead_of_vanishing() -> None:
    shape = (40, 60)
    left, right = disc(shape, 20, 20, 10), disc(shape, 20, 37, 10)
    union = left | right
    # each watershed half lies inside one disc (317 px), so min_size=320 drops both markers; the pair (614 px) stays
    assert left.sum() == right.sum() == 317 and union.sum() == 614
    np.testing.assert_array_equal(mask_to_instances(union, min_size=320), union.astype(np.int32))
    np.testing.assert_array_equal(mask_to_instances(union, min_size=union.sum() + 1), np.zeros(shape, np.int32))


@pytest.mark.parametrize(
    "shape_kind",
    ["disc", "ellipse_15x7", "ellipse_25x5", "rectangle_12x60", "square_4x4"],
)
def test_single_convex_object_is_not_oversplit(shape_kind: str) -> None:
    yy, xx = np.mgrid[:80, :100]
    if shape_kind == "disc":
        mask = disc((80, 100), 40, 50, 15)
    elif shape_kind.startswith("ellipse"):
        a, b = (int(v) for v in shape_kind.split("_")[1].split("x"))
        mask = ((yy - 40) / b) ** 2 + ((xx - 50) / a) ** 2 <= 1
    elif shape_kind == "rectangle_12x60":
        mask = np.zeros((80, 100), bool)
        mask[30:42, 20:80] = True
    else:
        mask = np.zeros((80, 100), bool)
        mask[10:14, 10:14] = True
    labels = mask_to_instances(mask)
    np.testing.assert_array_equal(labels, mask.astype(np.int32))


@pytest.mark.parametrize("watershed", [True, False])
@pytest.mark.parametrize("size,kept", [(15, False), (16, True), (30, True), (3, False)])
def test_min_size(watershed: bool, size: int, kept: bool) -> None:
    mask = np.zeros((40, 40), bool)
    mask[20:28, 20:28] = True  # 64 px, always kept
    mask[2, 2 : 2 + size] = True  # a 1-px-high bar of `size` px
    labels = mask_to_instances(mask, min_size=16, watershed=watershed, fill_holes=False)
    assert labels.max() == (2 if kept else 1)
    assert (labels[2, 2 : 2 + size] > 0).all() == kept
    assert (labels[20:28, 20:28] > 0).all()


@pytest.mark.parametrize("watershed", [True, False])
def test_labels_are_consecutive(watershed: bool) -> None:
    shape = (120, 120)
    rng = np.random.default_rng(0)
    mask = np.zeros(shape, bool)
    for cy, cx in rng.integers(8, 112, size=(25, 2)):
        mask |= disc(shape, cy, cx, rng.integers(3, 10))
    mask[rng.random(shape) < 0.01] = True  # single-pixel specks, all below min_size
    labels = mask_to_instances(mask, watershed=watershed)
    n = labels.max()
    assert n > 5
    np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))
    assert np.bincount(labels.ravel())[1:].min() >= 16


@pytest.mark.parametrize("threshold,expected_discs", [(0.5, ["high"]), (0.3, ["low", "high"]), (0.95, [])])
def test_threshold(threshold: float, expected_discs: list[str]) -> None:
    shape = (40, 80)
    discs = {"low": disc(shape, 20, 20, 8), "high": disc(shape, 20, 60, 8)}
    prob = 0.4 * discs["low"] + 0.9 * discs["high"]
    labels = probability_to_instances(prob, threshold=threshold)
    expected = np.zeros(shape, bool)
    for name in expected_discs:
        expected |= discs[name]
    np.testing.assert_array_equal(labels > 0, expected)
    assert labels.max() == len(expected_discs)


@pytest.mark.parametrize(
    "hole_radius,fill_holes,max_hole_size,filled",
    [(3, True, 256, True), (3, False, 256, False), (12, True, 256, False), (12, True, None, True)],
)
def test_fill_holes(hole_radius: int, fill_holes: bool, max_hole_size: int | None, filled: bool) -> None:
    shape = (60, 60)
    outer = disc(shape, 30, 30, 20)
    hole = disc(shape, 30, 30, hole_radius)
    labels = mask_to_instances(outer & ~hole, watershed=False, fill_holes=fill_holes, max_hole_size=max_hole_size)
    np.testing.assert_array_equal(labels > 0, outer if filled else outer & ~hole)


@pytest.mark.parametrize("connectivity,n", [(1, 2), (2, 1)])
def test_connectivity_diagonal_touch(connectivity: int, n: int) -> None:
    mask = np.zeros((30, 30), bool)
    mask[5:15, 5:15] = True
    mask[15:25, 15:25] = True  # touches the first square only at a corner
    assert mask_to_instances(mask, connectivity=connectivity, watershed=False).max() == n
    # the watershed splits the 8-connected pair at its one-pixel neck either way
    assert mask_to_instances(mask, connectivity=connectivity, watershed=True).max() == 2


def test_empty_input() -> None:
    np.testing.assert_array_equal(probability_to_instances(np.zeros((16, 16))), np.zeros((16, 16), np.int32))


@pytest.mark.parametrize(
    "prob,kwargs,error",
    [
        (np.zeros((1, 8, 8)), {}, ValueError),
        (np.full((8, 8), np.nan), {}, ValueError),
        (np.zeros((8, 8)), {"h": 0.0}, ValueError),
        (np.zeros((8, 8)), {"connectivity": 3}, ValueError),
        (np.zeros((8, 8)), {"min_distance": 0}, ValueError),
        (np.array([["a"]]), {}, TypeError),
    ],
)
def test_bad_input(prob: np.ndarray, kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        probability_to_instances(prob, **kwargs)


def test_watershed_params_one_definition_with_keyword_overrides():
    from cellseg_monai.postprocessing import WatershedParams

    base = WatershedParams(min_size=4)
    assert WatershedParams.of(base, watershed=False) == WatershedParams(min_size=4, watershed=False)
    assert WatershedParams.of() == WatershedParams() and WatershedParams.of(base) is base
    with pytest.raises(TypeError, match="unknown watershed parameter"):
        WatershedParams.of(min_sise=3)
    with pytest.raises(ValueError, match="connectivity"):
        WatershedParams(connectivity=3)
    yy, xx = np.mgrid[:40, :60]
    mask = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 100) | ((yy - 20) ** 2 + (xx - 37) ** 2 <= 100)
    params = WatershedParams(watershed=False)
    np.testing.assert_array_equal(mask_to_instances(mask, params), mask_to_instances(mask, watershed=False))
    assert mask_to_instances(mask, params, watershed=True).max() == 2  # a keyword overrides params


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_hole_size", [None, 0, 3, 20])
def test_fill_holes_equals_scipy_fill_then_size_filter(seed: int, max_hole_size: int | None) -> None:
    from scipy import ndimage as ndi

    from cellseg_monai.postprocessing.instances import _fill_holes

    rng = np.random.default_rng(seed)
    mask = ndi.gaussian_filter(rng.random((70, 90)), 1.5) > 0.48  # many holes of every size, some on the border
    filled = ndi.binary_fill_holes(mask)  # independent reference: scipy's fill, then holes filtered by size
    holes, _ = ndi.label(filled & ~mask)
    small = np.bincount(holes.ravel()) <= (np.inf if max_hole_size is None else max_hole_size)
    small[0] = False
    np.testing.assert_array_equal(_fill_holes(mask, max_hole_size), mask | small[holes])
    assert (_fill_holes(mask, None) != mask).any()  # the masks do have holes
    np.testing.assert_array_equal(_fill_holes(np.ones((5, 5), bool), None), np.ones((5, 5), bool))


def test_labels_on_border_are_the_ids_with_a_pixel_on_an_edge():
    labels = np.zeros((6, 7), np.int32)
    labels[0, 2] = 4  # top edge
    labels[2:4, 2:4] = 9  # inside
    labels[5, 6] = 2  # bottom-right corner
    labels[3, 0] = 7  # left edge
    assert labels_on_border(labels).tolist() == [2, 4, 7]
    assert labels_on_border(np.zeros((3, 3), np.int32)).size == 0
    with np.testing.assert_raises(ValueError):
        labels_on_border(np.zeros((1, 3, 3), np.int32))


def test_relative_h_keeps_a_large_dented_object_and_splits_small_touching_ones() -> None:
    # two overlapping discs; the neck's depth below the lower peak is measured on the exact distance transform
    shape = (140, 220)
    big = disc(shape, 60, 50, 40) | disc(shape, 60, 84, 39)  # peaks 40 and 39 px, neck 3.0 px deep
    small = disc(shape, 120, 170, 8) | disc(shape, 120, 182, 7)  # peaks 8 and 7 px, neck 2.1 px deep
    assert not (big & small).any()
    mask = big | small
    exact = {"sigma": 0.0, "min_distance": 3}

    def big_whole_small_split(labels: np.ndarray) -> bool:
        return len(np.unique(labels[big])) == 1 and len(np.unique(labels[small])) == 2

    # no absolute depth does both: the deeper neck belongs to the large object
    for h in (1.0, 1.5, 2.0, 2.5, 3.5):
        assert not big_whole_small_split(mask_to_instances(mask, h=h, **exact))
    # relative to each object's peak: 0.1 x 40 = 4 px for the large one, max(1, 0.1 x 8) = 1 px for the small one
    labels = mask_to_instances(mask, h=1.0, relative_h=0.1, **exact)
    assert labels.max() == 3 and big_whole_small_split(labels)
    np.testing.assert_array_equal(labels > 0, mask)
    # the same as each object alone at its own absolute depth
    np.testing.assert_array_equal(labels[big] > 0, mask_to_instances(big, h=4.0, **exact)[big] > 0)
    assert mask_to_instances(big, h=4.0, **exact).max() == 1 and mask_to_instances(small, h=1.0, **exact).max() == 2
    # 0 is off: the labels of the plain absolute depth
    np.testing.assert_array_equal(
        mask_to_instances(mask, h=1.0, relative_h=0.0, **exact), mask_to_instances(mask, h=1.0, **exact)
    )
    with pytest.raises(ValueError, match="relative_h"):
        mask_to_instances(mask, relative_h=-0.1)
