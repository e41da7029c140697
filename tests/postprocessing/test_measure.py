from __future__ import annotations

import math

import numpy as np
import pytest

from cellseg_monai.postprocessing.measure import MEASUREMENT_COLUMNS, measure_instances


def hand_labels() -> np.ndarray:
    labels = np.zeros((10, 12), np.int32)
    labels[2:5, 5:9] = 7  # 3 x 4 rectangle: area 12, centroid (3, 6.5)
    labels[6, 1:4] = 3  # L shape: (6,1) (6,2) (6,3) (7,1) (8,1): area 5
    labels[7:9, 1] = 3  # centroid y = (6*3 + 7 + 8) / 5 = 6.6, x = (1+2+3+1+1) / 5 = 1.6
    return labels


# id -> (area, centroid_y, centroid_x), computed by hand above
EXPECTED = {3: (5, 6.6, 1.6), 7: (12, 3.0, 6.5)}


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.int64, np.float32])
def test_area_and_centroid_by_hand(dtype: type) -> None:
    rows = measure_instances(hand_labels().astype(dtype))
    assert [row["id"] for row in rows] == [3, 7]
    for row in rows:
        assert tuple(row) == MEASUREMENT_COLUMNS
        area, cy, cx = EXPECTED[row["id"]]
        assert row["area"] == area
        assert row["centroid_y"] == pytest.approx(cy) and row["centroid_x"] == pytest.approx(cx)
        assert math.isnan(row["mean_intensity"])
        assert row["score"] == 1.0


@pytest.mark.parametrize(
    "channels,expected",
    [
        # image (C, H, W) constant per object and channel: mean over channels of the object's value
        ([{3: 10.0, 7: 2.0}], {3: 10.0, 7: 2.0}),
        ([{3: 10.0, 7: 2.0}, {3: 0.0, 7: 4.0}], {3: 5.0, 7: 3.0}),
    ],
)
def test_mean_intensity_over_channels(channels: list[dict[int, float]], expected: dict[int, float]) -> None:
    labels = hand_labels()
    image = np.full((len(channels), *labels.shape), 100.0)  # background value must not leak in
    for c, values in enumerate(channels):
        for obj_id, value in values.items():
            image[c][labels == obj_id] = value
    for img in (image, image[0]) if len(channels) == 1 else (image,):
        rows = measure_instances(labels, image=img)
        assert {row["id"]: row["mean_intensity"] for row in rows} == pytest.approx(expected)


def test_score_is_mean_probability_inside() -> None:
    labels = hand_labels()
    prob = np.zeros(labels.shape)
    prob[labels == 7] = 0.8
    prob[2, 5] = 0.2  # one of 12 pixels of object 7: mean (11 * 0.8 + 0.2) / 12 = 0.75
    prob[labels == 3] = 0.5
    rows = measure_instances(labels, prob=prob)
    assert {row["id"]: row["score"] for row in rows} == pytest.approx({3: 0.5, 7: 0.75})


def test_empty_labels() -> None:
    assert measure_instances(np.zeros((5, 5), np.int32), image=np.ones((5, 5))) == []


@pytest.mark.parametrize(
    "labels,image,prob,error",
    [
        (np.zeros((1, 4, 4), np.int32), None, None, ValueError),
        (np.zeros((4, 4), bool), None, None, TypeError),
        (np.full((4, 4), 0.5), None, None, ValueError),
        (-np.ones((4, 4), np.int32), None, None, ValueError),
        (np.zeros((4, 4), np.int32), np.zeros((4, 5)), None, ValueError),
        (np.zeros((4, 4), np.int32), np.zeros((2, 4, 5)), None, ValueError),
        (np.zeros((4, 4), np.int32), None, np.zeros((1, 4, 4)), ValueError),
    ],
)
def test_bad_input(labels: np.ndarray, image: np.ndarray | None, prob: np.ndarray | None, error: type) -> None:
    with pytest.raises(error):
        measure_instances(labels, image=image, prob=prob)


@pytest.mark.parametrize("block_pixels", [1, 25, 1 << 16])
def test_row_blocks_match_scipy_on_random_labels(block_pixels, monkeypatch):
    from scipy import ndimage

    from cellseg_monai.postprocessing import measure

    monkeypatch.setattr(measure, "BLOCK_PIXELS", block_pixels)  # 1 or 5 rows per block, or the whole image
    rng = np.random.default_rng(3)
    labels, _ = ndimage.label(ndimage.binary_opening(rng.random((37, 23)) > 0.45))
    image = rng.integers(0, 4000, (3, 37, 23)).astype(np.uint16)
    prob = rng.random((37, 23)).astype(np.float32)
    rows = measure.measure_instances(labels, image, prob)
    ids = list(range(1, int(labels.max()) + 1))
    assert [r["id"] for r in rows] == ids and len(ids) > 5
    com = ndimage.center_of_mass(np.ones_like(labels), labels, ids)
    grey = ndimage.mean(image.astype(np.float64).mean(0), labels, ids)
    score = ndimage.mean(prob.astype(np.float64), labels, ids)
    for r, (cy, cx), g, s in zip(rows, com, grey, score, strict=True):
        assert r["area"] == int((labels == r["id"]).sum())
        assert r["centroid_y"] == pytest.approx(cy) and r["centroid_x"] == pytest.approx(cx)
        assert r["mean_intensity"] == pytest.approx(g) and r["score"] == pytest.approx(s)


def test_object_means_and_presence_against_scipy(monkeypatch):
    from scipy import ndimage

    import cellseg_monai.postprocessing.measure as module

    monkeypatch.setattr(module, "BLOCK_PIXELS", 37)  # many blocks of one row (and rows split across none)
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 9, (23, 31)).astype(np.int32)
    labels[labels == 5] = 0  # id 5 absent
    maps = rng.normal(size=(3, 23, 31)).astype(np.float32)
    ids = [1, 2, 4, 6, 8]
    got = module.object_means(labels, maps, ids)
    for f in range(3):
        np.testing.assert_allclose(got[f], ndimage.mean(maps[f], labels, index=ids), rtol=1e-6)
    assert np.isnan(module.object_means(labels, maps, [5])).all()
    np.testing.assert_array_equal(module.present_ids(labels), [i in np.unique(labels) for i in range(9)])
    assert module.count_instances(labels) == len(np.unique(labels)) - 1 == 7
    with pytest.raises(ValueError, match="maps must be"):
        module.object_means(labels, maps[0], ids)
