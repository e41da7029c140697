"""Point (LOI) and foreground-mask annotations: simulation, DoG detection, Otsu mask, user CSV files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cellseg_monai.annotations.points import (
    detect_points,
    read_points_csv,
    read_weak_mask,
    read_weak_points,
    simulate_points,
    threshold_mask,
    write_points_csv,
)
from cellseg_monai.data.io import DataError


def _rect_labels() -> np.ndarray:
    lab = np.zeros((20, 30), np.uint16)
    lab[2:6, 3:9] = 1  # centroid (3.5, 5.5)
    lab[10:13, 20:29] = 4  # centroid (11, 24)
    lab[15, 0] = 2  # single pixel (15, 0)
    return lab


CENTROIDS = np.array([[3.5, 5.5], [15.0, 0.0], [11.0, 24.0]])  # id order 1, 2, 4


@pytest.mark.parametrize("shape_prefix", [(), (1,)])
def test_simulate_points_are_centroids_in_id_order(shape_prefix):
    lab = _rect_labels().reshape(*shape_prefix, 20, 30)
    np.testing.assert_allclose(simulate_points(lab, "a"), CENTROIDS)


def test_simulate_points_jitter_is_deterministic_per_id_and_seed():
    lab = _rect_labels()
    a = simulate_points(lab, "img", seed=1, jitter=2.0)
    np.testing.assert_array_equal(a, simulate_points(lab, "img", seed=1, jitter=2.0))
    assert not np.array_equal(a, simulate_points(lab, "img", seed=2, jitter=2.0))
    assert not np.array_equal(a, simulate_points(lab, "other", seed=1, jitter=2.0))
    assert not np.allclose(a, CENTROIDS)
    assert np.all(a >= 0) and np.all(a[:, 0] <= 19) and np.all(a[:, 1] <= 29)  # clipped to the image


def test_simulate_points_empty_and_errors():
    assert simulate_points(np.zeros((5, 5), int), "x").shape == (0, 2)
    with pytest.raises(ValueError, match="jitter"):
        simulate_points(_rect_labels(), "x", jitter=-1.0)
    with pytest.raises(ValueError):
        simulate_points(np.zeros((2, 5, 5), int), "x")


def _blobs(centres, shape=(64, 64), sigma=2.5) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    for cy, cx in centres:
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return img


@pytest.mark.parametrize("centres", [[(10, 12), (40, 50)], [(20, 20), (20, 40), (50, 30)]])
def test_detect_points_finds_gaussian_blobs(centres):
    pts = detect_points(_blobs(centres), sigma_small=2.0, sigma_large=4.0, min_distance=3, threshold=0.05)
    assert len(pts) == len(centres)
    for c in centres:
        assert np.min(np.hypot(*(pts - np.array(c)).T)) <= 1.0


def test_detect_points_threshold_and_flat_image():
    assert detect_points(_blobs([(20, 20)]), threshold=10.0).shape == (0, 2)
    assert detect_points(np.zeros((16, 16))).shape == (0, 2)
    with pytest.raises(ValueError):
        detect_points(np.zeros((8, 8)), sigma_small=3.0, sigma_large=2.0)


def test_threshold_mask_otsu_and_fixed():
    img = np.full((10, 10), 0.2)
    img[2:5, 2:7] = 0.8
    expected = (img == 0.8).astype(np.uint8)  # any threshold between the two levels gives this mask
    np.testing.assert_array_equal(threshold_mask(img), expected)
    np.testing.assert_array_equal(threshold_mask(img, threshold=0.9), np.zeros_like(expected))
    np.testing.assert_array_equal(threshold_mask(np.ones((4, 4))), np.zeros((4, 4), np.uint8))


def test_points_csv_round_trip_and_extra_columns(tmp_path):
    pts = np.array([[1.5, 2.25], [10.0, 0.0]])
    np.testing.assert_allclose(read_points_csv(write_points_csv(tmp_path / "a.csv", pts)), pts)
    (tmp_path / "b.csv").write_text("id,X,Y\n1,3,4\n")
    np.testing.assert_allclose(read_points_csv(tmp_path / "b.csv"), [[4.0, 3.0]])


@pytest.mark.parametrize(
    "content,shape,match",
    [
        ("a,b\n1,2\n", None, "header"),
        ("y,x\n1,abc\n", None, "non-numeric"),
        ("y,x\n1,nan\n", None, "NaN"),
        ("y,x\n1,2\n50,3\n", (10, 10), "outside"),
    ],
)
def test_bad_points_csv_names_the_file(tmp_path, content, shape, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as err:
        read_points_csv(path, shape)
    assert "bad.csv" in str(err.value)


def test_weak_folders(tmp_path):
    (tmp_path / "weak" / "points").mkdir(parents=True)
    (tmp_path / "weak" / "masks").mkdir(parents=True)
    (tmp_path / "weak" / "points" / "im1.csv").write_text("y,x\n3,4\n")
    mask = np.zeros((6, 7), np.uint8)
    mask[1:3, 2:5] = 255
    tifffile.imwrite(tmp_path / "weak" / "masks" / "im1.tif", mask)
    np.testing.assert_allclose(read_weak_points(tmp_path, "im1"), [[3.0, 4.0]])
    np.testing.assert_array_equal(read_weak_mask(tmp_path, "im1"), (mask > 0).astype(np.uint8))
    with pytest.raises(DataError, match="im2.csv"):
        read_weak_points(tmp_path, "im2")
    with pytest.raises(DataError, match="im2"):
        read_weak_mask(tmp_path, "im2")
