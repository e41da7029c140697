from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.metrics.pixel import pixel_confusion, pixel_dice, pixel_f1, pixel_iou, roc_auc


def brute_force_auc(prob: np.ndarray, gt: np.ndarray) -> float:
    """Mean over all (foreground, background) pixel pairs of [p_fg > p_bg] + 0.5 [p_fg == p_bg]."""
    pos, neg = prob[gt > 0].ravel(), prob[gt == 0].ravel()
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@pytest.mark.parametrize(
    "prob, gt, expected",
    [
        # classic example: pairs (0.35 vs 0.1 win, 0.35 vs 0.4 lose, 0.8 wins twice) -> 3 / 4
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
        ([0.2, 0.2, 0.9, 0.9], [0, 3, 0, 7], 0.5),  # ties count one half
        ([0.0, 0.1, 0.9, 1.0], [0, 0, 2, 5], 1.0),
        ([0.9, 1.0, 0.0, 0.1], [0, 0, 2, 5], 0.0),
    ],
)
def test_auc_hand(prob: list, gt: list, expected: float) -> None:
    assert roc_auc(np.array(prob).reshape(2, 2), np.array(gt).reshape(2, 2)) == pytest.approx(expected)


def test_auc_against_pair_count() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        prob = np.round(rng.random((20, 20)), 1)  # many ties
        gt = rng.integers(0, 4, size=(20, 20)) * (rng.random((20, 20)) < 0.4)
        assert roc_auc(prob, gt) == pytest.approx(brute_force_auc(prob, gt))
        assert roc_auc(torch.as_tensor(prob)[None], torch.as_tensor(gt)[None]) == pytest.approx(
            brute_force_auc(prob, gt)
        )


def test_auc_one_class_is_nan() -> None:
    assert np.isnan(roc_auc(np.full((3, 3), 0.5), np.zeros((3, 3), int)))
    assert np.isnan(roc_auc(np.full((3, 3), 0.5), np.ones((3, 3), int)))


@pytest.mark.parametrize(
    "prob, gt, threshold, counts, e_f1, e_iou",
    [
        # fg = prob >= 0.5 -> [1, 1, 0, 0, 1]; gt fg [1, 0, 1, 0, 1] -> tp 2, fp 1, fn 1, tn 1
        ([0.9, 0.5, 0.2, 0.0, 0.7], [4, 0, 2, 0, 4], 0.5, (2, 1, 1, 1), 4 / 6, 2 / 4),
        ([0.9, 0.5, 0.2, 0.0, 0.7], [4, 0, 2, 0, 4], 0.8, (1, 0, 2, 2), 2 / 4, 1 / 3),
        ([0.1, 0.2, 0.2, 0.0, 0.3], [0, 0, 0, 0, 0], 0.5, (0, 0, 0, 5), 1.0, 1.0),  # both empty
        ([0.1, 0.2, 0.2, 0.0, 0.3], [0, 0, 1, 0, 0], 0.5, (0, 0, 1, 4), 0.0, 0.0),
    ],
)
def test_thresholded(prob: list, gt: list, threshold: float, counts: tuple, e_f1: float, e_iou: float) -> None:
    p, g = np.array(prob), np.array(gt)
    assert pixel_confusion(p, g, threshold) == counts
    assert pixel_f1(p, g, threshold) == pytest.approx(e_f1)
    assert pixel_dice(p, g, threshold) == pytest.approx(e_f1)
    assert pixel_iou(p, g, threshold) == pytest.approx(e_iou)


@pytest.mark.parametrize(
    "prob, gt, msg",
    [
        (np.full((3, 3), 1.5), np.zeros((3, 3), int), r"\[0, 1\]"),
        (np.full((3, 3), np.nan), np.zeros((3, 3), int), r"\[0, 1\]"),
        (np.zeros((3, 3)), np.zeros((3, 4), int), "same shape"),
    ],
)
def test_bad_input(prob: np.ndarray, gt: np.ndarray, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        pixel_f1(prob, gt)
