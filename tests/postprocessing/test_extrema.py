"""h_maxima_of_objects must equal skimage's h_maxima on the maps the watershed feeds it (and fall back otherwise)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima

from cellseg_monai.postprocessing import extrema
from cellseg_monai.postprocessing.extrema import h_maxima_of_objects, peak_local_max_of_labels


def _distance_map(seed: int, shape=(96, 128), blobs=25, sigma=1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(blobs):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(2, 12, 2)
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    dist = ndi.distance_transform_edt(mask)
    return ndi.gaussian_filter(dist, sigma) * mask if sigma else dist


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("h", [0.5, 1.0, 2.5])
def test_equals_skimage_on_masked_distance_maps(seed, h, monkeypatch):
    dist = _distance_map(seed, sigma=(seed % 3) * 0.5)
    expected = h_maxima(dist, h)

    def no_fallback(*args, **kwargs):
        raise AssertionError("the object-by-object path must handle a masked distance map")

    monkeypatch.setattr(extrema, "h_maxima", no_fallback)
    np.testing.assert_array_equal(h_maxima_of_objects(dist, h), expected)
    # objects reconstructed in many small canvases (one or a few boxes each) give the same mask
    np.testing.assert_array_equal(h_maxima_of_objects(dist, h, batch_pixels=600), expected)


def test_objects_touching_the_border_and_each_other_diagonally():
    dist = np.zeros((20, 20))
    dist[0:6, 0:6] = ndi.distance_transform_edt(np.ones((6, 6)), sampling=1)  # at the image corner
    dist[6:12, 6:12] = 3.0  # a plateau touching the first object at one corner only (8-connected to it)
    dist[8, 8] = 5.0
    dist[14:19, 14:19] = 0.4  # a flat low object: a maximum of dynamic < h
    for h in (0.3, 1.0, 2.0):
        np.testing.assert_array_equal(h_maxima_of_objects(dist, h), h_maxima(dist, h))


def test_background_enclosed_by_an_object():
    ring = np.zeros((30, 30))
    ring[5:25, 5:25] = 2.0
    ring[10:20, 10:20] = 0.0  # background enclosed by the ring: two background regions
    ring[14, 14] = 0.0
    ring[7, 7] = 3.5
    for h in (0.5, 1.0):
        np.testing.assert_array_equal(h_maxima_of_objects(ring, h), h_maxima(ring, h))


def test_nothing_and_everything():
    assert not h_maxima_of_objects(np.zeros((8, 8)), 1.0).any()
    full = np.full((8, 8), 1.0)
    full[4, 4] = 3.0
    np.testing.assert_array_equal(h_maxima_of_objects(full, 1.0), h_maxima(full, 1.0))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("min_distance", [1, 3, 5])
def test_peaks_of_labels_equal_skimage(seed, min_distance):
    dist = _distance_map(seed, sigma=(seed % 3) * 0.5)
    components, _ = ndi.label(dist > 0)  # 4-connected, as the watershed labels them
    expected = peak_local_max(dist, min_distance=min_distance, labels=components, exclude_border=False)
    expected = expected[np.lexsort(expected.T[::-1])]
    np.testing.assert_array_equal(peak_local_max_of_labels(dist, components, min_distance), expected)


def test_peaks_of_flat_labels_are_their_isolated_pixels():
    image = np.zeros((12, 12))
    labels = np.zeros((12, 12), int)
    labels[2:6, 2:6], image[2:6, 2:6] = 1, 1.0  # flat square: its 4 corners (the opening removes them)
    labels[8, 8], image[8, 8] = 2, 2.0  # a single pixel
    labels[8:11, 2], image[8:11, 2] = 3, 0.5  # a flat line: all isolated, spacing 2 keeps its ends
    expected = peak_local_max(image, min_distance=2, labels=labels, exclude_border=False)
    expected = expected[np.lexsort(expected.T[::-1])]
    np.testing.assert_array_equal(peak_local_max_of_labels(image, labels, 2), expected)
    assert {tuple(p) for p in expected} == {(2, 2), (2, 5), (5, 2), (5, 5), (8, 8), (8, 2), (10, 2)}
