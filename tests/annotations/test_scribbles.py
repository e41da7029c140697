"""Tests of cellseg_monai.annotations.scribbles against hand-made label images and skimage references."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage.draw import disk as draw_disk
from skimage.morphology import skeletonize

from cellseg_monai.annotations.scribbles import budget_count, read_scribbles, simulate_scribbles, touching_seams
from cellseg_monai.data.io import DataError


def discs(n: int, shape: tuple[int, int] = (128, 128), radius: int = 6, touching: bool = False) -> np.ndarray:
    """n discs on a grid (ids 1..n); with ``touching`` neighbours in a row share a border."""
    lab = np.zeros(shape, np.int32)
    step = 2 * radius if touching else 2 * radius + 6
    per_row = (shape[1] - 2) // step
    for i in range(n):
        cy = radius + 2 + (i // per_row) * (2 * radius + 6)
        cx = radius + 2 + (i % per_row) * step
        rr, cc = draw_disk((cy, cx), radius, shape=shape)
        lab[rr, cc] = i + 1
    assert len(np.unique(lab)) == n + 1
    return lab


def annotated(lab: np.ndarray, scr: np.ndarray) -> set[int]:
    return set(np.unique(lab[scr >= 2]).tolist()) - {0}


@pytest.mark.parametrize(
    "n, budget, expected",
    [
        (12, 3, 3),
        (12, 20, 12),
        (12, 0.3, 4),  # ceil(3.6)
        (12, 0.25, 3),  # exactly 3.0
        (10, 0.3, 3),  # 0.3 * 10 = 3.0000000000000004 in floating point: still 3
        (12, 1.0, 12),
        (12, 0.01, 1),  # at least 1
        (12, 1, 1),
        (12, 0, 0),
        (1, 0.3, 1),
    ],
)
def test_budget_respected(n, budget, expected):
    lab = discs(n)
    scr = simulate_scribbles(lab, "img", budget=budget)
    assert len(annotated(lab, scr)) == expected
    assert budget_count(budget, n) == expected


@pytest.mark.parametrize("touching", [False, True])
@pytest.mark.parametrize("fov", [8, 32])
def test_strokes_are_skeletons_inside_objects(touching, fov):
    lab = discs(15, touching=touching)
    scr = simulate_scribbles(lab, "a", seed=3, budget=0.5, fov=fov)
    assert set(np.unique(scr).tolist()) <= {0, 1, 2}
    assert np.all(lab[scr >= 2] > 0), "foreground scribble outside objects"
    assert np.all(lab[scr == 1] == 0), "background scribble on an object"
    assert (scr == 1).any()
    for i in annotated(lab, scr):
        # reference: the skimage skeleton of the object alone, padded so the image border does not matter
        ref = skeletonize(np.pad(lab == i, 2))[2:-2, 2:-2]
        np.testing.assert_array_equal((scr >= 2) & (lab == i), ref)


def test_background_strokes_near_annotated_objects():
    lab = discs(12)
    scr = simulate_scribbles(lab, "b", budget=2, fov=16)
    dist = ndimage.distance_transform_edt(~np.isin(lab, list(annotated(lab, scr))))
    # every background stroke lies in a 16 x 16 field of view around an annotated object, or in its ring
    assert dist[scr == 1].max() <= 16 * np.sqrt(2) + 4


def test_touching_seams_hand_made():
    lab = np.array(
        [
            [1, 1, 2, 0],
            [1, 1, 2, 0],
            [3, 0, 0, 4],  # 3 touches 1 from below; 4 touches 2 only diagonally
        ]
    )
    index, own, other = touching_seams(lab)
    ys, xs = np.unravel_index(index, lab.shape)
    got = sorted(zip(ys.tolist(), xs.tolist(), own.tolist(), other.tolist(), strict=True))
    expected = [
        (0, 1, 1, 2),
        (0, 2, 2, 1),
        (1, 1, 1, 2),
        (1, 2, 2, 1),  # the vertical seam of 1 and 2, both sides
        (1, 0, 1, 3),
        (2, 0, 3, 1),  # 1 above 3
    ]
    assert got == sorted(expected)


def test_touching_seams_none_without_contact():
    index, own, other = touching_seams(discs(6))
    assert index.size == own.size == other.size == 0


@pytest.mark.parametrize("budget", [2, 5, 0.5])
def test_separate_touching_marks_the_seams_of_annotated_objects(budget):
    # clumps of touching nuclei: each pixel within 7 px of a seed belongs to its nearest seed (Voronoi seams)
    rng = np.random.default_rng(0)
    seeds = np.zeros((96, 96), np.int32)
    seeds[tuple(rng.integers(8, 88, size=(2, 20)))] = np.arange(1, 21)
    dist, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    lab = np.where(dist <= 7, seeds[iy, ix], 0)
    plain = simulate_scribbles(lab, "t", seed=1, budget=budget, fov=8)
    seams = simulate_scribbles(lab, "t", seed=1, budget=budget, fov=8, separate_touching=True)
    chosen = annotated(lab, plain)
    assert annotated(lab, seams) == chosen
    # reference: a pixel of object a is on a seam when a 4-neighbour belongs to another object b, and a or b is annotated
    cross = ndimage.generate_binary_structure(2, 1)
    expected = np.zeros(lab.shape, bool)
    for a in range(1, int(lab.max()) + 1):
        near = ndimage.binary_dilation(lab == a, cross) & (lab > 0) & (lab != a)  # pixels of others next to a
        for b in np.unique(lab[near]):
            if a in chosen or b in chosen:
                expected |= (lab == b) & ndimage.binary_dilation(lab == a, cross)
                expected |= (lab == a) & ndimage.binary_dilation(lab == b, cross)
    expected &= plain < 2  # foreground strokes keep their pixels
    assert expected.any()
    np.testing.assert_array_equal(seams[expected], 1)
    np.testing.assert_array_equal(seams[~expected], plain[~expected])


def test_deterministic_and_seeded():
    lab = discs(20)
    a = simulate_scribbles(lab, "x", seed=0, budget=3)
    np.testing.assert_array_equal(a, simulate_scribbles(lab.copy(), "x", seed=0, budget=3))
    others = [simulate_scribbles(lab, sid, seed=s, budget=3) for sid, s in (("y", 0), ("z", 0), ("x", 1), ("x", 2))]
    assert sum(not np.array_equal(a, o) for o in others) >= 3


def test_deterministic_across_processes():
    """The seed comes from a stable hash: a fresh interpreter with another PYTHONHASHSEED gives the same strokes."""
    code = (
        "import numpy as np, hashlib;"
        "from cellseg_monai.annotations.scribbles import simulate_scribbles;"
        "lab = np.zeros((64, 64), np.int32); lab[5:15, 5:15] = 1; lab[30:40, 30:44] = 2; lab[50:60, 8:20] = 3;"
        "print(hashlib.md5(simulate_scribbles(lab, 'proc', seed=4, budget=1).tobytes()).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED=str(hash("other") % 1000 + 1))  # differs from this process's hash seed
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    lab = np.zeros((64, 64), np.int32)
    lab[5:15, 5:15] = 1
    lab[30:40, 30:44] = 2
    lab[50:60, 8:20] = 3
    here = hashlib.md5(simulate_scribbles(lab, "proc", seed=4, budget=1).tobytes()).hexdigest()
    assert out.stdout.strip() == here


def test_empty_labels_give_background_only():
    lab = np.zeros((48, 40), np.int32)
    for budget in (0.3, 3):
        scr = simulate_scribbles(lab, "empty", budget=budget)
        assert set(np.unique(scr).tolist()) == {0, 1}


def test_tiny_objects_get_their_pixel():
    lab = np.zeros((20, 20), np.int32)
    lab[3, 3] = 1
    lab[10, 10:12] = 2
    lab[15:17, 15:17] = 3
    scr = simulate_scribbles(lab, "tiny", budget=1.0)
    assert annotated(lab, scr) == {1, 2, 3}
    assert scr[3, 3] == 2


def test_class_map_and_sparse_ids():
    lab = discs(6) * 1000  # ids 1000..6000, not sequential
    class_map = {1000: 1, 2000: 2, 3000: 3, 4000: 2}
    scr = simulate_scribbles(lab, "c", budget=1.0, class_map=class_map)
    for i in range(1, 7):
        values = np.unique(scr[lab == i * 1000])
        assert set(values.tolist()) == {0, class_map.get(i * 1000, 1) + 1}


def test_contour_classes_add_an_inner_ring():
    lab = np.zeros((64, 64), np.int32)
    rr, cc = draw_disk((32, 32), 20)
    lab[rr, cc] = 1
    plain = simulate_scribbles(lab, "r", budget=1)
    ring = simulate_scribbles(lab, "r", budget=1, contour_classes=(1,))
    depth = ndimage.distance_transform_edt(lab > 0)
    near_border = (depth >= 3) & (depth <= 6)
    assert (ring[near_border] == 2).sum() > 2 * np.pi * 14  # a closed ring ~4 px inside the border
    assert (plain[near_border] == 2).sum() < 10  # the skeleton alone barely reaches there
    assert np.all(lab[ring >= 2] > 0)


@pytest.mark.parametrize("budget, error", [(1.5, ValueError), (-1, ValueError), (True, TypeError), ("3", TypeError)])
def test_bad_budget(budget, error):
    with pytest.raises(error):
        simulate_scribbles(discs(3), "b", budget=budget)


@pytest.mark.parametrize(
    "name, array, expected",
    [
        ("s.png", np.array([[0, 1, 2], [3, 0, 1]], np.uint8), np.array([[0, 1, 2], [3, 0, 1]])),
        ("s.tif", np.array([[0, 1], [2, 2]], np.float32), np.array([[0, 1], [2, 2]])),
        ("grey_rgb.png", np.stack([np.array([[0, 1], [2, 0]], np.uint8)] * 3, -1), np.array([[0, 1], [2, 0]])),
    ],
)
def test_read_scribbles_valid(tmp_path, name, array, expected):
    path = tmp_path / name
    tifffile.imwrite(path, array) if name.endswith(".tif") else iio.imwrite(path, array)
    np.testing.assert_array_equal(read_scribbles(path), expected)


@pytest.mark.parametrize(
    "name, array, words",
    [
        (
            "colour.png",
            np.stack([np.eye(4, dtype=np.uint8) * 255, np.zeros((4, 4), np.uint8), np.eye(4, dtype=np.uint8)], -1),
            "colour",
        ),
        ("mask.png", (np.eye(4) * 255).astype(np.uint8), "0 and 255"),
        ("neg.tif", np.array([[0, -1]], np.int16), "negative"),
        ("half.tif", np.array([[0, 1.5]], np.float32), "not integral"),
        ("big.tif", np.array([[0, 300]], np.uint16), "out of range"),
    ],
)
def test_read_scribbles_invalid(tmp_path, name, array, words):
    path = tmp_path / name
    tifffile.imwrite(path, array) if name.endswith(".tif") else iio.imwrite(path, array)
    with pytest.raises(DataError) as err:
        read_scribbles(path)
    assert name in str(err.value) and words in str(err.value)
