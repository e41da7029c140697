from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from cellseg_monai.annotations.foreground_count import (
    count_instances,
    find_weak_mask,
    read_counts,
    read_foreground_count,
    read_foreground_mask,
    simulate_foreground_count,
)
from cellseg_monai.data.io import DataError

LABELS = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 5, 5, 0, 0, 0],
        [0, 5, 5, 0, 9, 9],
        [0, 0, 0, 0, 9, 9],
        [2, 2, 0, 0, 0, 0],
        [2, 2, 0, 0, 0, 7],
    ],
    dtype=np.uint16,
)

CASES = [
    # crop_box, expected count (hand-counted), expected mask
    (None, 4, (LABELS > 0).astype(np.uint8)),
    ((0, 0, 3, 3), 1, np.array([[0, 0, 0], [0, 1, 1], [0, 1, 1]], dtype=np.uint8)),
    ((2, 2, 5, 5), 2, np.array([[1, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=np.uint8)),  # 5 and 9 cut by the border count
    ((1, 1, 5, 5), 3, np.array([[1, 1, 0, 0], [1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]], dtype=np.uint8)),
    ((0, 3, 2, 6), 0, np.zeros((2, 3), dtype=np.uint8)),
    ((5, 5, 6, 6), 1, np.ones((1, 1), dtype=np.uint8)),
]


@pytest.mark.parametrize("crop_box,count,mask", CASES)
def test_simulate_against_hand_made(crop_box, count, mask):
    got_mask, got_count = simulate_foreground_count(LABELS, crop_box)
    assert got_count == count and isinstance(got_count, int)
    assert got_mask.dtype == np.uint8
    np.testing.assert_array_equal(got_mask, mask)


@pytest.mark.parametrize("wrap", [lambda a: a[None], lambda a: torch.from_numpy(a.astype(np.int64))[None]])
def test_channel_first_and_torch_inputs(wrap):
    mask, count = simulate_foreground_count(wrap(LABELS), (1, 1, 5, 5))
    assert count == 3 and mask.shape == (4, 4)


def test_count_instances():
    assert count_instances(LABELS) == 4
    assert count_instances(np.zeros((3, 3), dtype=np.int32)) == 0


@pytest.mark.parametrize(
    "labels,crop_box,exc",
    [
        (LABELS, (0, 0, 7, 3), ValueError),
        (LABELS, (2, 2, 2, 4), ValueError),
        (LABELS, (0, 0, 3), ValueError),
        (-LABELS.astype(np.int32), None, DataError),
        (LABELS.astype(float) + 0.5, None, DataError),
    ],
)
def test_simulate_errors(labels, crop_box, exc):
    with pytest.raises(exc):
        simulate_foreground_count(labels, crop_box)


def _dataset(tmp_path, counts, mask=None, suffix=".tif"):
    (tmp_path / "weak" / "masks").mkdir(parents=True)
    if mask is not None:
        tifffile.imwrite(str(tmp_path / "weak" / "masks" / f"img1{suffix}"), mask)
    if counts is not None:
        (tmp_path / "weak" / "counts.json").write_text(counts if isinstance(counts, str) else json.dumps(counts))
    return tmp_path


def test_read_user_made(tmp_path):
    raw = (LABELS * 20).astype(np.uint8)  # any dtype; > 0 = foreground
    root = _dataset(tmp_path, {"img1": 4, "img2": 3.0}, raw)
    mask, count = read_foreground_count(root, "img1")
    np.testing.assert_array_equal(mask, (LABELS > 0).astype(np.uint8))
    assert count == 4
    assert read_counts(root / "weak" / "counts.json") == {"img1": 4, "img2": 3}
    assert find_weak_mask(root, "img1").name == "img1.tif"
    np.testing.assert_array_equal(read_foreground_mask(find_weak_mask(root, "img1")), mask)


@pytest.mark.parametrize(
    "counts,mask,match",
    [
        ({"img1": 4}, None, "img1.tif"),  # missing mask file
        (None, LABELS, "counts.json"),  # missing counts file
        ("{not json", LABELS, "counts.json"),
        ([4], LABELS, "counts.json"),
        ({"img1": -1}, LABELS, "counts.json"),
        ({"img1": 2.5}, LABELS, "counts.json"),
        ({"img1": True}, LABELS, "counts.json"),
        ({"other": 1}, LABELS, "img1"),  # id missing from counts.json
        ({"img1": 3}, np.zeros((6, 6), np.uint8), "img1.tif"),  # count > 0 with an empty mask
        ({"img1": 0}, LABELS, "img1.tif"),
    ],
)
def test_read_errors_name_the_file(tmp_path, counts, mask, match):
    root = _dataset(tmp_path, counts, mask)
    with pytest.raises(DataError, match=match):
        read_foreground_count(root, "img1")


def test_mask_3d_stack_is_rejected(tmp_path):
    root = _dataset(tmp_path, {"img1": 1})
    path = root / "weak" / "masks" / "img1.tif"
    tifffile.imwrite(str(path), np.ones((7, 6, 6), np.uint8))
    with pytest.raises(DataError, match="img1.tif"):
        read_foreground_mask(path)
