from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import cellseg_monai.metrics.matching as matching_module
from cellseg_monai.metrics.matching import (
    ImageMatches,
    as_label_image,
    iou_matrix,
    match,
    match_greedy,
    match_labels,
    overlap,
    scores_by_index,
)
from tests.metrics._reference import random_labels, ref_best_matching, ref_iou_matrix, shifted_relabelled


def squares(a: int, d: int, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """GT square of side a at (5, 5); prediction the same square shifted right by d. IoU = (a - d) / (a + d)."""
    gt = np.zeros((size, size), np.int32)
    pred = np.zeros_like(gt)
    gt[5 : 5 + a, 5 : 5 + a] = 4
    pred[5 : 5 + a, 5 + d : 5 + d + a] = 11
    return gt, pred


def strips(spans_gt: list[tuple[int, int]], spans_pred: list[tuple[int, int]], n: int = 30) -> tuple:
    """1-pixel-high label images; object k covers columns [a, b) and gets id 10 k + 3 (non-consecutive)."""
    gt = np.zeros((1, n), np.int64)
    pred = np.zeros((1, n), np.int64)
    for k, (a, b) in enumerate(spans_gt):
        gt[0, a:b] = 10 * k + 3
    for k, (a, b) in enumerate(spans_pred):
        pred[0, a:b] = 10 * k + 5
    return gt, pred


def test_doctest() -> None:
    res = doctest.testmod(matching_module)
    assert res.attempted > 5 and res.failed == 0


@pytest.mark.parametrize(
    "a, d, t, tp",
    [
        (10, 2, 0.5, 1),  # IoU 8/12
        (10, 2, 0.66, 1),
        (10, 2, 0.67, 0),
        (12, 4, 0.5, 1),  # IoU 8/16 = 0.5 exactly: IoU >= t matches
        (12, 4, 0.51, 0),
        (10, 0, 1.0, 1),  # identical: t = 1.0 matches
        (10, 1, 1.0, 0),
    ],
)
def test_shifted_squares(a: int, d: int, t: float, tp: int) -> None:
    gt, pred = squares(a, d)
    ov = overlap(gt, pred)
    assert ov.iou_matrix()[0, 0] == pytest.approx((a - d) / (a + d))
    assert ov.gt_areas.tolist() == [a * a] and ov.pred_areas.tolist() == [a * a]
    m = match(ov, t)
    assert (m.tp, m.fp, m.fn) == (tp, 1 - tp, 1 - tp)
    if tp:
        assert m.gt_ids.tolist() == [4] and m.pred_ids.tolist() == [11]


@pytest.mark.parametrize(
    "spans_gt, spans_pred, t, expected",
    [
        # split: GT [0, 20) predicted as two halves, IoU 0.5 each
        ([(0, 20)], [(0, 10), (10, 20)], 0.5, (1, 1, 0)),
        ([(0, 20)], [(0, 10), (10, 20)], 0.55, (0, 2, 1)),
        # merge: two GT halves predicted as one object
        ([(0, 10), (10, 20)], [(0, 20)], 0.5, (1, 0, 1)),
        ([(0, 10), (10, 20)], [(0, 20)], 0.6, (0, 1, 2)),
        # greedy-by-IoU would pair A-P1 and leave B unmatched; the optimum pairs A-P2 and B-P1
        ([(0, 10), (10, 20)], [(4, 14), (0, 4)], 0.25, (2, 0, 0)),
        # empty / empty, empty prediction, empty GT
        ([], [], 0.5, (0, 0, 0)),
        ([(0, 5), (7, 9)], [], 0.5, (0, 0, 2)),
        ([], [(0, 5)], 0.5, (0, 1, 0)),
    ],
)
def test_match_hand_cases(spans_gt: list, spans_pred: list, t: float, expected: tuple) -> None:
    gt, pred = strips(spans_gt, spans_pred)
    m = match_labels(gt, pred, t)
    assert (m.tp, m.fp, m.fn) == expected
    ref = ref_iou_matrix(gt, pred)[2]
    assert np.allclose(m.ious, ref[m.gt_index, m.pred_index])


def test_optimal_matching_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(25):
        gt = random_labels(rng, (24, 24), int(rng.integers(0, 6)), 6, 50)
        pred = random_labels(rng, (24, 24), int(rng.integers(0, 6)), 6, 50)
        gids, pids, ref = ref_iou_matrix(gt, pred)
        ov = overlap(gt, pred)
        assert ov.gt_ids.tolist() == gids and ov.pred_ids.tolist() == pids
        assert np.allclose(ov.iou_matrix(), ref)
        for t in (0.05, 0.2, 0.5):
            m = match(ov, t)
            k, s = ref_best_matching(ref, t)
            assert m.tp == k
            assert m.ious.sum() == pytest.approx(s)
            assert len(set(m.gt_index.tolist())) == m.tp and len(set(m.pred_index.tolist())) == m.tp


def test_strict_threshold() -> None:
    gt, pred = squares(12, 4)  # IoU exactly 0.5
    ov = overlap(gt, pred)
    assert match(ov, 0.5).tp == 1
    assert match(ov, 0.5, strict=True).tp == 0


@pytest.mark.parametrize(
    "scores, tp",
    [
        ({5: 0.9, 15: 0.8}, 1),  # P1 (id 5) first takes A (its best), P2 finds A taken
        ({5: 0.1, 15: 0.8}, 2),  # P2 first takes A, P1 then takes B
    ],
)
def test_greedy_score_ranked(scores: dict, tp: int) -> None:
    gt, pred = strips([(0, 10), (10, 20)], [(4, 14), (0, 4)])
    ov = overlap(gt, pred)
    m = match_greedy(ov, scores_by_index(ov, scores), 0.25)
    assert m.tp == tp


def test_scores_by_index_forms() -> None:
    gt, pred = strips([(0, 10)], [(0, 4), (5, 9)])
    ov = overlap(gt, pred)
    arr = np.zeros(20)
    arr[5], arr[15] = 0.3, 0.7
    assert scores_by_index(ov, arr).tolist() == [0.3, 0.7]
    assert scores_by_index(ov, {5: 0.3, 15: 0.7}).tolist() == [0.3, 0.7]
    with pytest.raises(ValueError, match="no score"):
        scores_by_index(ov, {5: 0.3})
    with pytest.raises(ValueError, match="length"):
        scores_by_index(ov, np.zeros(10))


def test_image_matches_caches_and_needs_scores() -> None:
    gt, pred = squares(10, 2)
    r = ImageMatches.from_labels(gt, pred)
    assert r.matching(0.5) is r.matching(0.5)
    with pytest.raises(ValueError, match="scores"):
        r.greedy(0.5)


@pytest.mark.parametrize(
    "x, err, msg",
    [
        (np.zeros((2, 3, 4)), ValueError, "shape"),
        (-np.ones((3, 3), np.int32), ValueError, ">= 0"),
        (np.full((3, 3), 0.5), TypeError, "non-integer"),
        (np.zeros((3, 3), np.complex64), TypeError, "dtype"),
    ],
)
def test_bad_labels(x: np.ndarray, err: type, msg: str) -> None:
    with pytest.raises(err, match=msg):
        as_label_image(x)


def test_label_image_forms() -> None:
    gt, pred = squares(10, 2)
    ref = iou_matrix(gt, pred)
    assert np.array_equal(iou_matrix(torch.as_tensor(gt)[None, None].float(), pred[None]), ref)
    assert np.array_equal(iou_matrix(gt.astype(bool), pred.astype(np.uint16)), ref)
    assert np.array_equal(iou_matrix(gt.astype(np.uint64), pred.astype(np.int8)), ref)
    with pytest.raises(ValueError, match="same shape"):
        overlap(gt, pred[:-1])


def test_huge_ids_use_sort_path() -> None:
    gt, pred = squares(10, 2)
    gt64 = gt.astype(np.int64) * 10**12
    ov = overlap(gt64, pred.astype(np.uint32) * 100_000)
    assert ov.gt_ids.tolist() == [4 * 10**12] and ov.pred_ids.tolist() == [1_100_000]
    assert ov.iou_matrix()[0, 0] == pytest.approx(8 / 12)


def test_many_objects_against_slow_reference() -> None:
    """~2000 discs in 2048 x 2048: sampled rows of the IoU matrix and a crop checked with per-object masks."""
    rng = np.random.default_rng(1)
    gt = random_labels(rng, (2048, 2048), 2000, 25, 10**6)
    pred = shifted_relabelled(rng, gt, (2, -3), 10**6)
    ov = overlap(gt, pred)
    assert ov.n_gt > 1500 and ov.n_pred > 1500
    iou = ov.iou_matrix()
    for row in rng.choice(ov.n_gt, size=20, replace=False):
        gm = gt == ov.gt_ids[row]
        assert ov.gt_areas[row] == gm.sum()
        under = [p for p in np.unique(pred[gm]) if p != 0]
        ref_row = np.zeros(ov.n_pred)
        for p in under:
            pm = pred == p
            ref_row[np.searchsorted(ov.pred_ids, p)] = (gm & pm).sum() / (gm | pm).sum()
        assert np.allclose(iou[row], ref_row)
    # a crop: the full IoU matrix and, for t > 0.5 (unique matching), tp = #pairs with IoU >= t
    gc, pc = gt[700:956, 1200:1456], pred[700:956, 1200:1456]
    ovc = overlap(gc, pc)
    gids, pids, ref = ref_iou_matrix(gc, pc)
    assert ovc.gt_ids.tolist() == gids and ovc.pred_ids.tolist() == pids
    assert np.allclose(ovc.iou_matrix(), ref)
    for t in (0.55, 0.75):
        m = match(ovc, t)
        assert m.tp == int((ref >= t).sum())
