from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.postprocessing.sparse_instances import (
    first_claiming_mask,
    mask_iou_matrix,
    mask_nms,
    maskness,
    sparse_instances_to_labels,
)


def _square(y0: int, x0: int, side: int, prob: float = 0.9, shape: tuple[int, int] = (20, 20)) -> np.ndarray:
    m = np.full(shape, 0.05, np.float32)
    m[y0 : y0 + side, x0 : x0 + side] = prob
    return m


def test_maskness_by_hand():
    probs = torch.tensor([[[0.9, 0.7], [0.2, 0.1]], [[0.4, 0.3], [0.2, 0.1]]])
    torch.testing.assert_close(maskness(probs), torch.tensor([0.8, 0.0]))


def test_mask_iou_matrix_by_hand():
    a = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 px
    b = np.zeros((4, 4), bool)
    b[:2, 1:3] = True  # 4 px, 2 shared
    iou = mask_iou_matrix(torch.as_tensor(np.stack([a, b, np.zeros((4, 4), bool)])))
    expected = torch.tensor([[1.0, 2 / 6, 0.0], [2 / 6, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(iou, expected)


NMS_CASES = [
    # squares (y, x, side), scores, threshold, kept indices (descending score)
    ([(0, 0, 4), (0, 1, 4), (10, 10, 4)], [0.9, 0.8, 0.7], 0.5, [0, 2]),  # IoU(0, 1) = 12/20 = 0.6 > 0.5
    ([(0, 0, 4), (0, 1, 4), (10, 10, 4)], [0.9, 0.8, 0.7], 0.7, [0, 1, 2]),
    ([(0, 0, 4), (0, 1, 4), (0, 2, 4)], [0.5, 0.9, 0.8], 0.5, [1]),  # 1 suppresses both neighbours
    ([(0, 0, 4), (0, 2, 4), (0, 4, 4)], [0.9, 0.8, 0.7], 0.5, [0, 1, 2]),  # IoU 8/24 each
]


@pytest.mark.parametrize("squares,scores,threshold,expected", NMS_CASES)
def test_mask_nms(squares, scores, threshold, expected):
    masks = torch.as_tensor(np.stack([_square(*s) > 0.5 for s in squares]))
    kept = mask_nms(masks, torch.tensor(scores), threshold)
    assert kept.tolist() == expected


def test_labels_ranked_thresholded_deduplicated_and_painted():
    masks = np.stack(
        [
            _square(2, 2, 6, prob=0.9),  # A: score 0.8 * 0.9
            _square(2, 3, 6, prob=0.8),  # duplicate of A (IoU 30/42), lower score -> suppressed
            _square(10, 10, 6, prob=0.95),  # B: score 0.9 * 0.95, the best -> label 1
            _square(5, 5, 6, prob=0.6),  # C: overlaps A, kept (IoU 9/63); loses the shared pixels to A
            _square(14, 0, 5, prob=0.9),  # D: class score too low
        ]
    )
    class_prob = np.array([0.8, 0.7, 0.9, 0.9, 0.1], np.float32)
    labels, scores = sparse_instances_to_labels(class_prob, masks, score_threshold=0.3, nms_threshold=0.5, min_size=4)
    expected = np.zeros((20, 20), np.int64)
    expected[5:11, 5:11] = 3  # C (score 0.54) is painted under A
    expected[2:8, 2:8] = 2  # A (score 0.72)
    expected[10:16, 10:16] = 1  # B (score 0.855) wins its overlap with C
    np.testing.assert_array_equal(labels.numpy(), expected)
    np.testing.assert_allclose(scores.numpy(), [0.9 * 0.95, 0.8 * 0.9, 0.9 * 0.6], rtol=1e-6)


def test_painted_instances_below_min_size_disappear():
    big = _square(0, 0, 10, prob=0.9)
    covered = _square(1, 1, 4, prob=0.8)  # lies inside the big mask: after painting it has 0 px
    labels, scores = sparse_instances_to_labels(np.array([0.9, 0.9]), np.stack([big, covered]), nms_threshold=1.0)
    assert labels.max() == 1 and (labels == 1).sum() == 100 and len(scores) == 1


def test_nothing_above_threshold():
    labels, scores = sparse_instances_to_labels(np.array([0.1]), _square(0, 0, 6)[None], score_threshold=0.5)
    assert labels.shape == (20, 20) and labels.max() == 0 and scores.numel() == 0


@pytest.mark.parametrize(
    "class_prob,mask_prob,kwargs",
    [
        (np.ones(2), np.ones((3, 4, 4)), {}),
        (np.ones(2), np.ones((2, 4)), {}),
        (np.ones(1), np.ones((1, 4, 4)), {"score_threshold": 1.5}),
    ],
)
def test_bad_input(class_prob, mask_prob, kwargs):
    with pytest.raises(ValueError):
        sparse_instances_to_labels(class_prob, mask_prob, **kwargs)


def _nms_reference(masks: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """The tensor-per-mask greedy loop :func:`mask_nms` replaced."""
    order = torch.argsort(scores, descending=True, stable=True)
    iou = mask_iou_matrix(masks[order])
    kept = torch.zeros(order.shape[0], dtype=torch.bool)
    for i in range(order.shape[0]):
        kept[i] = not bool((iou[i][kept] > threshold).any())
    return order[torch.nonzero(kept)[:, 0]]


@pytest.mark.parametrize("seed", range(5))
def test_mask_nms_matches_the_tensor_loop_on_random_blobs(seed):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(40, 24, 24, dtype=torch.bool)
    for i in range(40):  # random rectangles: many overlapping pairs, some empty masks, tied scores
        y, x = torch.randint(0, 20, (2,), generator=gen).tolist()
        hh, ww = torch.randint(0, 9, (2,), generator=gen).tolist()
        masks[i, y : y + hh, x : x + ww] = True
    scores = torch.randint(0, 6, (40,), generator=gen).float() / 5
    for threshold in (0.0, 0.3, 0.5, 0.9):
        assert mask_nms(masks, scores, threshold).tolist() == _nms_reference(masks, scores, threshold).tolist()


def test_first_claiming_mask_matches_argmax():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(7, 9, 11, generator=gen) > 0.85
    masks[:, 0, 0] = False  # an unclaimed pixel
    masks[:, 1, 1] = True  # claimed by all: mask 0 owns it
    owner, claimed = first_claiming_mask(masks)
    assert torch.equal(claimed, masks.any(0))
    assert torch.equal(owner[claimed], torch.argmax(masks.to(torch.uint8), dim=0)[claimed])
    assert owner[0, 0] == 0 and owner[1, 1] == 0 and owner.dtype == torch.int64
    owner, claimed = first_claiming_mask(torch.zeros(0, 3, 4, dtype=torch.bool))
    assert owner.shape == (3, 4) and not claimed.any()
