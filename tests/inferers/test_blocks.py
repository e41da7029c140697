"""Block-wise segmentation of large images: block geometry, and stitched instances against whole-image references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from cellseg_monai.contract import ATTRIBUTES_KEY, FG_PROB_KEY, LABELS_KEY, SCORE_KEY, SCORED_KEY
from cellseg_monai.inferers.blocks import block_windows, needs_blocks, segment_in_blocks
from tests.inferers.test_tiled_roundtrip import _discs


def test_block_windows_by_hand():
    # 10 px in ceil(10 / 4) = 3 cores: edges round(10/3) = 3, round(20/3) = 7; 1 px of context, clipped
    assert block_windows(10, 4, 1) == [(0, 4, 0, 3), (2, 8, 3, 7), (6, 10, 7, 10)]
    assert block_windows(5, 8, 3) == [(0, 5, 0, 5)]  # one core: the whole axis, no margin to add
    with pytest.raises(ValueError, match="block_size"):
        block_windows(10, 0, 1)


@pytest.mark.parametrize("size, block, margin", [(6000, 2048, 96), (4097, 2048, 0), (777, 100, 13), (1, 1, 5)])
def test_block_cores_partition_the_axis(size, block, margin):
    windows = block_windows(size, block, margin)
    assert windows[0][2] == 0 and windows[-1][3] == size
    for (s0, e0, lo0, hi0), (_, _, lo1, _) in zip(windows, windows[1:] + [(0, 0, size, 0)], strict=True):
        assert hi0 == lo1 and 0 < hi0 - lo0 <= block  # contiguous cores, none over block_size
        assert s0 == max(0, lo0 - margin) and e0 == min(size, hi0 + margin)


def test_needs_blocks():
    assert not needs_blocks((4096, 4096), 4096) and needs_blocks((4097, 10), 4096) and needs_blocks((1, 5000), 4096)
    assert not needs_blocks((10**6, 10**6), None)


def _components(block: dict) -> dict:
    """Reference method for a block: connected components of image > 0.5; score 0.5 + value/10 where the image
    holds the value (so every object has its own score); fg_prob = the image itself; attributes = 2 × image."""
    image = block["image"]
    labels, _ = ndimage.label(np.asarray(image[0]) > 0.5)
    prob = torch.as_tensor(np.asarray(image[:1]), dtype=torch.float32)
    return {
        **block,
        LABELS_KEY: torch.as_tensor(labels[None], dtype=torch.int32),
        SCORE_KEY: torch.where(prob > 0.5, 0.5 + prob / 10, torch.zeros_like(prob)),
        FG_PROB_KEY: prob,
        ATTRIBUTES_KEY: torch.cat([prob, 2 * prob]),
        "intermediate": prob,  # not part of the contract: not stitched
    }


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images describe the same objects (same pixels, ids may differ)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("block, margin", [(128, 16), (100, 24), (333, 16), (1000, 0)])
def test_stitched_instances_equal_the_whole_image_components(block, margin):
    truth = _discs((600, 700), n=80, seed=3)  # discs of radius 6..10: extent from the centroid <= 11 < margin
    image = MetaTensor(
        torch.as_tensor((truth > 0).astype(np.float32) * 0.9)[None],
        meta={"filename_or_obj": "/data/big.tif", "id": "big"},
    )
    raw = torch.arange(600 * 700, dtype=torch.float32).reshape(1, 600, 700)
    out = segment_in_blocks({"image": image, "image_raw": raw, "note": "kept"}, _components, block, margin)

    labels = np.asarray(out[LABELS_KEY][0])
    assert _same_partition(labels, ndimage.label(truth > 0)[0])
    assert sorted(np.unique(labels)) == list(range(81))  # renumbered 1..K
    whole = _components({"image": image})
    for key in (SCORE_KEY, FG_PROB_KEY, ATTRIBUTES_KEY):  # each pixel from its owner block = the whole-image value
        np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(whole[key]))
    np.testing.assert_array_equal(
        np.asarray(out[SCORED_KEY]), np.concatenate([labels[None], np.asarray(out[SCORE_KEY])])
    )
    assert out[LABELS_KEY].dtype == torch.int32 and out[LABELS_KEY].meta["filename_or_obj"] == "/data/big.tif"
    assert out["image_raw"] is raw and out["note"] == "kept" and "intermediate" not in out


def test_objects_cut_by_every_block_border_come_back_whole():
    # a grid of discs centred on the block corners and edges: every one straddles two or four cores
    yy, xx = np.mgrid[:300, :300]
    truth = np.zeros((300, 300), np.int32)
    for k, (cy, cx) in enumerate([(100, 100), (100, 200), (200, 100), (200, 200), (100, 50), (250, 200)], 1):
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= 81] = k
    image = torch.as_tensor((truth > 0).astype(np.float32))[None]
    out = segment_in_blocks({"image": image}, _components, block_size=100, margin=12)
    assert _same_partition(np.asarray(out[LABELS_KEY][0]), truth)


def _conflict(first_wins: bool, b_stop: int = 76):
    """A method whose blocks disagree: the first block (columns 0..59 + margin) sees one wide object A (columns
    40..63) centred in its core, the second one sees a different object B (columns 56..b_stop-1) centred in its
    own core; A and B share columns 56..63."""
    scores = (0.9, 0.4) if first_wins else (0.4, 0.9)

    def segment(block: dict) -> dict:
        start = int(block["col"][0, 0, 0])  # the block's first column (the image holds column indices)
        h, w = block["image"].shape[-2:]
        labels = np.zeros((h, w), np.int32)
        cols = np.arange(start, start + w)
        labels[2:8, (cols >= 40) & (cols < 64) if start == 0 else (cols >= 56) & (cols < b_stop)] = 1
        score = np.where(labels > 0, scores[0] if start == 0 else scores[1], 0.0).astype(np.float32)
        return {**block, LABELS_KEY: torch.as_tensor(labels[None]), SCORE_KEY: torch.as_tensor(score[None])}

    col = torch.arange(120, dtype=torch.float32).expand(1, 10, 120)
    return segment_in_blocks({"image": torch.zeros(1, 10, 120), "col": col}, segment, block_size=60, margin=20)


@pytest.mark.parametrize("first_wins", [True, False])
def test_overlapping_instances_of_neighbouring_blocks_go_to_the_higher_score(first_wins):
    out = _conflict(first_wins)  # each loses at most 8 of its 20 or 24 columns: both stay
    labels, score = np.asarray(out[LABELS_KEY][0]), np.asarray(out[SCORE_KEY][0])
    a, b = labels[4, 50], labels[4, 70]
    assert a > 0 and b > 0 and a != b
    assert np.all(labels[2:8, 56:64] == (a if first_wins else b))  # the shared columns
    assert np.all(labels[2:8, 40:56] == a) and np.all(labels[2:8, 64:76] == b)
    np.testing.assert_allclose(score[4, 56:64], 0.9)  # the map follows the pixel's owner
    assert labels.max() == 2


def test_an_instance_left_with_under_half_of_its_pixels_is_dropped_not_kept_as_a_sliver():
    out = _conflict(first_wins=True, b_stop=66)  # B (10 columns) loses 8 to A: its 2 remaining columns go
    labels = np.asarray(out[LABELS_KEY][0])
    assert sorted(np.unique(labels)) == [0, 1] and np.all(labels[2:8, 40:64] == 1) and not labels[:, 64:].any()


def test_an_instance_that_loses_every_pixel_disappears_and_ids_stay_consecutive():
    def segment(block: dict) -> dict:
        start = int(block["col"][0, 0, 0])
        labels = np.zeros(block["image"].shape[-2:], np.int32)
        if start == 0:  # block 1: a small object (low score) inside the big one block 2 finds (high score)
            labels[3:5, 57:59] = 1
        else:
            labels[1:9, 50 - start : 80 - start] = 1
        score = np.where(labels > 0, 0.3 if start == 0 else 0.8, 0.0).astype(np.float32)
        return {**block, LABELS_KEY: torch.as_tensor(labels[None]), SCORE_KEY: torch.as_tensor(score[None])}

    col = torch.arange(120, dtype=torch.float32).expand(1, 10, 120)
    out = segment_in_blocks({"image": torch.zeros(1, 10, 120), "col": col}, segment, block_size=60, margin=30)
    labels = np.asarray(out[LABELS_KEY][0])
    assert sorted(np.unique(labels)) == [0, 1] and np.all(labels[1:9, 50:80] == 1)


def test_segment_in_blocks_rejects_outputs_of_the_wrong_size():
    def bad(block: dict) -> dict:
        return {LABELS_KEY: torch.zeros(1, 5, 5, dtype=torch.int32), SCORE_KEY: torch.zeros(1, 5, 5)}

    with pytest.raises(ValueError, match="block output 'pred' must be"):
        segment_in_blocks({"image": torch.zeros(1, 50, 50)}, bad, block_size=20, margin=4)
