from __future__ import annotations

import numpy as np
import pytest

from cellseg_monai.metrics.instance import (
    THRESHOLDS_DSB,
    THRESHOLDS_F1,
    aji,
    ap_dsb,
    ap_dsb_mean,
    evaluate_pairs,
    f1,
    f1_mean,
    fnr,
    instance_scores,
    mdice,
    miou,
    ncs,
    pq,
    precision,
    recall,
)
from tests.metrics._reference import random_labels, ref_aji, ref_iou_matrix
from tests.metrics.test_matching import squares, strips

EMPTY = np.zeros((6, 6), np.int32)
ONE = EMPTY.copy()
ONE[1:3, 1:3] = 2


def test_thresholds() -> None:
    assert THRESHOLDS_DSB == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    assert THRESHOLDS_F1 == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


# (gt, pred, t, f1, precision, recall, fnr, ap_dsb)  -- hand-computed from tp / fp / fn
CASES = [
    # split GT [0, 20) into two halves: tp 1, fp 1, fn 0 at t = 0.5
    (*strips([(0, 20)], [(0, 10), (10, 20)]), 0.5, 2 / 3, 1 / 2, 1.0, 0.0, 1 / 2),
    # merge of two GT halves: tp 1, fp 0, fn 1
    (*strips([(0, 10), (10, 20)], [(0, 20)]), 0.5, 2 / 3, 1.0, 1 / 2, 1 / 2, 1 / 2),
    # 3 GT, 2 perfect predictions + 1 spurious: tp 2, fp 1, fn 1
    (*strips([(0, 4), (5, 9), (10, 14)], [(0, 4), (5, 9), (20, 25)]), 0.9, 4 / 6, 2 / 3, 2 / 3, 1 / 3, 2 / 4),
    # both empty: perfect by convention
    (EMPTY, EMPTY, 0.5, 1.0, 1.0, 1.0, 0.0, 1.0),
    # empty prediction: everything missed
    (ONE, EMPTY, 0.5, 0.0, 0.0, 0.0, 1.0, 0.0),
    # empty GT: everything spurious; no GT -> fnr 0
    (EMPTY, ONE, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("gt, pred, t, e_f1, e_prec, e_rec, e_fnr, e_ap", CASES)
def test_count_metrics(gt, pred, t, e_f1, e_prec, e_rec, e_fnr, e_ap) -> None:
    assert f1(gt, pred, t) == pytest.approx(e_f1)
    assert precision(gt, pred, t) == pytest.approx(e_prec)
    assert recall(gt, pred, t) == pytest.approx(e_rec)
    assert fnr(gt, pred, t) == pytest.approx(e_fnr)
    assert ap_dsb(gt, pred, t) == pytest.approx(e_ap)
    names = [f"f1@{t}", f"precision@{t}", f"recall@{t}", f"fnr@{t}", f"ap_dsb@{t}"]
    got = instance_scores(gt, pred, names)
    assert [got[n] for n in names] == pytest.approx([e_f1, e_prec, e_rec, e_fnr, e_ap])


@pytest.mark.parametrize(
    "a, d, e_ap_mean, e_f1_mean",
    [
        (10, 2, 0.4, 0.6),  # IoU 2/3: passes t <= 0.65 (4 of 10 DSB thresholds), t <= 0.6 (6 of 10 F1 thresholds)
        (10, 0, 1.0, 1.0),  # identical: passes every threshold including t = 1.0
        (10, 1, 0.7, 0.8),  # IoU 9/11 = 0.818: passes DSB 0.5..0.8 (7 of 10), F1 0.1..0.8 (8 of 10)
        (10, 9, 0.0, 0.0),  # IoU 1/19 = 0.053 < 0.1
    ],
)
def test_threshold_means_on_shifted_squares(a: int, d: int, e_ap_mean: float, e_f1_mean: float) -> None:
    gt, pred = squares(a, d)
    iou = (a - d) / (a + d)
    # independent count of passed thresholds: the pair is the only candidate, score 1 if IoU >= t else 0
    exp_ap = np.mean([1.0 if iou >= t else 0.0 for t in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)])
    exp_f1 = np.mean([1.0 if iou >= t else 0.0 for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)])
    assert (exp_ap, exp_f1) == pytest.approx((e_ap_mean, e_f1_mean))
    assert ap_dsb_mean(gt, pred) == pytest.approx(exp_ap)
    assert f1_mean(gt, pred) == pytest.approx(exp_f1)


def test_mdice_miou_hand() -> None:
    # GT A = [0, 10), B = [10, 20), C = [25, 28); pred P = [0, 8) and Q = [8, 20)
    gt, pred = strips([(0, 10), (10, 20), (25, 28)], [(0, 8), (8, 20)])
    iou_a, iou_b = 8 / 10, 10 / 12  # A's best: P (8/10 vs Q 2/20); B's best: Q
    dice_a, dice_b = 2 * 8 / 18, 2 * 10 / 22
    assert miou(gt, pred) == pytest.approx((iou_a + iou_b + 0) / 3)
    assert mdice(gt, pred) == pytest.approx((dice_a + dice_b + 0) / 3)
    assert mdice(EMPTY, EMPTY) == 1.0 and mdice(EMPTY, ONE) == 0.0 and miou(ONE, EMPTY) == 0.0


def test_aji_hand() -> None:
    gt, pred = strips([(0, 10), (10, 20), (25, 28)], [(0, 8), (8, 20), (22, 24)])
    # A-P: C 8, U 10; B-Q: C 10, U 12; C unmatched: U += 3; R (2 px) unused: U += 2
    assert aji(gt, pred) == pytest.approx(18 / 27)
    assert aji(EMPTY, EMPTY) == 1.0 and aji(ONE, EMPTY) == 0.0


def test_aji_reuses_prediction() -> None:
    # one prediction covering two GT halves is the best partner of both (Kumar et al. allow reuse)
    gt, pred = strips([(0, 10), (10, 20)], [(0, 20)])
    assert aji(gt, pred) == pytest.approx((10 + 10) / (20 + 20))


def test_aji_against_reference() -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        gt = random_labels(rng, (40, 40), int(rng.integers(0, 8)), 8, 100)
        pred = random_labels(rng, (40, 40), int(rng.integers(0, 8)), 8, 100)
        assert aji(gt, pred) == pytest.approx(ref_aji(gt, pred))


def test_pq_hand() -> None:
    # exact 0.5 IoU does not match for PQ (IoU > 0.5); squares IoU 2/3 does
    gt, pred = squares(12, 4)
    assert pq(gt, pred) == 0.0
    gt, pred = strips([(0, 10), (12, 16)], [(0, 8), (20, 22)])  # A-P IoU 0.8; 1 fn, 1 fp
    got = instance_scores(gt, pred, ["pq", "sq", "rq"])
    assert got["sq"] == pytest.approx(0.8)
    assert got["rq"] == pytest.approx(1 / (1 + 0.5 + 0.5))
    assert got["pq"] == pytest.approx(0.8 * 0.5)
    assert pq(EMPTY, EMPTY) == 1.0


def test_pq_against_reference() -> None:
    rng = np.random.default_rng(4)
    for _ in range(10):
        gt = random_labels(rng, (40, 40), int(rng.integers(1, 8)), 8, 100)
        pred = random_labels(rng, (40, 40), int(rng.integers(1, 8)), 8, 100)
        iou = ref_iou_matrix(gt, pred)[2]
        matched = iou[iou > 0.5]
        tp = matched.size
        fp, fn = iou.shape[1] - tp, iou.shape[0] - tp
        assert pq(gt, pred) == pytest.approx(matched.sum() / (tp + 0.5 * fp + 0.5 * fn))


def test_pooled_vs_mean() -> None:
    # image 1: 1 tp of 1; image 2: 0 tp, 3 fn -> pooled f1 = 2*1 / (2 + 0 + 3), mean f1 = (1 + 0) / 2
    g1, p1 = strips([(0, 5)], [(0, 5)])
    g2, p2 = strips([(0, 3), (4, 7), (8, 11)], [])
    res = evaluate_pairs([(g1, p1), (g2, p2)], names=["f1@0.5", "fnr@0.5", "aji"])
    assert res["per_image_mean"]["f1@0.5"] == pytest.approx(0.5)
    assert res["pooled"]["f1@0.5"] == pytest.approx(2 / 5)
    assert res["pooled"]["fnr@0.5"] == pytest.approx(3 / 4)
    assert res["pooled"]["aji"] == pytest.approx(5 / (5 + 9))
    assert [r["f1@0.5"] for r in res["per_image"]] == [1.0, 0.0]


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown instance metric"):
        instance_scores(ONE, ONE, ["nope"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        instance_scores(ONE, ONE, ["f1@1.5"])


def test_ncs_hand() -> None:
    # GT A (10 px) best IoU 8/10, B (10 px) best 10/12, C (3 px) uncovered: area-weighted mean
    gt, pred = strips([(0, 10), (10, 20), (25, 28)], [(0, 8), (8, 20)])
    assert ncs(gt, pred) == pytest.approx((10 * 0.8 + 10 * 10 / 12 + 3 * 0.0) / 23)
    assert ncs(EMPTY, EMPTY) == 1.0 and ncs(EMPTY, ONE) == 0.0 and ncs(ONE, EMPTY) == 0.0


def disc_pixels(cy: int, cx: int, r: int) -> set[tuple[int, int]]:
    return {
        (y, x)
        for y in range(cy - r, cy + r + 1)
        for x in range(cx - r, cx + r + 1)
        if (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    }


@pytest.mark.parametrize("r, d", [(10, 3), (10, 7), (15, 12), (6, 0)])
def test_shifted_discs(r: int, d: int) -> None:
    """IoU of a disc and its copy shifted by d pixels: counted on coordinate sets, close to the analytic lens area."""
    a, b = disc_pixels(30, 30, r), disc_pixels(30, 30 + d, r)
    iou = len(a & b) / len(a | b)
    lens = 2 * r * r * np.arccos(d / (2 * r)) - d / 2 * np.sqrt(4 * r * r - d * d)
    assert iou == pytest.approx(lens / (2 * np.pi * r * r - lens), abs=0.05)
    gt, pred = np.zeros((64, 64), np.int32), np.zeros((64, 64), np.int32)
    for y, x in a:
        gt[y, x] = 1
    for y, x in b:
        pred[y, x] = 2
    got = instance_scores(gt, pred, ["miou", "f1@0.5", "ap_dsb_mean", "aji", "pq"])
    assert got["miou"] == pytest.approx(iou)
    assert got["aji"] == pytest.approx(iou)
    assert got["f1@0.5"] == (1.0 if iou >= 0.5 else 0.0)
    assert got["ap_dsb_mean"] == pytest.approx(np.mean([iou >= t for t in THRESHOLDS_DSB]))
    assert got["pq"] == pytest.approx(iou if iou > 0.5 else 0.0)


def test_pooled_pq_and_mdice() -> None:
    # image 1: GT [0, 10) vs [0, 8) (IoU 0.8); image 2: GT [0, 4) and [5, 9), predicted exactly and a spurious one
    g1, p1 = strips([(0, 10)], [(0, 8)])
    g2, p2 = strips([(0, 4), (5, 9)], [(0, 4), (5, 9), (20, 22)])
    res = evaluate_pairs([(g1, p1), (g2, p2)], names=["pq", "mdice", "sq", "rq"])
    # pooled: tp 3 (IoU sum 2.8), fp 1, fn 0
    assert res["pooled"]["pq"] == pytest.approx(2.8 / (3 + 0.5))
    assert res["pooled"]["sq"] == pytest.approx(2.8 / 3)
    assert res["pooled"]["rq"] == pytest.approx(3 / 3.5)
    # pooled mdice: mean over the 3 GT objects of the dataset
    assert res["pooled"]["mdice"] == pytest.approx((2 * 8 / 18 + 1 + 1) / 3)
    assert res["per_image_mean"]["mdice"] == pytest.approx((2 * 8 / 18 + 1) / 2)
