from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from cellseg_monai.metrics.instance import evaluate_pairs, instance_scores
from cellseg_monai.metrics.matching import ImageMatches
from cellseg_monai.metrics.ranking import ap_ranked, coco_ap, map_ranked
from tests.metrics._reference import random_labels
from tests.metrics.test_matching import strips

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def rec(gt: np.ndarray, pred: np.ndarray, scores: dict) -> ImageMatches:
    return ImageMatches.from_labels(gt, pred, scores)


# strips: GT ids 3, 13, 23, ...; prediction ids 5, 15, 25, ...
@pytest.mark.parametrize(
    "spans_gt, spans_pred, scores, t, expected",
    [
        # ranked [TP, FP, TP] with 2 GT: (1/1 + 2/3) / 2
        ([(0, 5), (6, 10)], [(0, 5), (20, 24), (6, 10)], {5: 0.9, 15: 0.8, 25: 0.7}, 0.5, (1 + 2 / 3) / 2),
        # ranked [FP, TP] with 3 GT: (1/2) / 3
        ([(0, 5), (6, 10), (12, 14)], [(0, 5), (20, 24)], {5: 0.1, 15: 0.8}, 0.5, (1 / 2) / 3),
        # duplicate detections of one GT: the lower-scored one is a FP
        ([(0, 10)], [(0, 10), (0, 9)], {5: 0.9, 15: 0.95}, 0.5, 1 / 1),  # pred 15 (IoU 0.9) takes it first
        ([(0, 10)], [(0, 10), (0, 4)], {5: 0.2, 15: 0.95}, 0.5, (1 / 2) / 1),  # pred 15 (IoU 0.4) is FP first
        ([], [], {}, 0.5, 1.0),
        ([], [(0, 3)], {5: 1.0}, 0.5, 0.0),
        ([(0, 3)], [], {}, 0.5, 0.0),
    ],
)
def test_ap_ranked_hand(spans_gt: list, spans_pred: list, scores: dict, t: float, expected: float) -> None:
    gt, pred = strips(spans_gt, spans_pred)
    assert ap_ranked([rec(gt, pred, scores)], t) == pytest.approx(expected)
    assert instance_scores(gt, pred, [f"ap@{t}"], scores=scores)[f"ap@{t}"] == pytest.approx(expected)


def test_map_ranked_and_pooling() -> None:
    # image 1: GT [0, 10) predicted [0, 8) IoU 0.8 -> TP for t <= 0.8 (7 of 10 thresholds)
    g1, p1 = strips([(0, 10)], [(0, 8)])
    # image 2: one GT missed, one spurious low-score prediction
    g2, p2 = strips([(0, 4)], [(10, 12)])
    r1, r2 = rec(g1, p1, {5: 0.9}), rec(g2, p2, {5: 0.3})
    assert map_ranked([r1]) == pytest.approx(0.7)
    # pooled at t = 0.5: ranking [TP (0.9), FP (0.3)], 2 GT -> (1/1) / 2
    assert ap_ranked([r1, r2], 0.5) == pytest.approx(0.5)
    res = evaluate_pairs([(g1, p1, {5: 0.9}), (g2, p2, {5: 0.3})], names=["ap@0.5", "mAP"])
    assert res["per_image_mean"]["ap@0.5"] == pytest.approx((1.0 + 0.0) / 2)
    assert res["pooled"]["ap@0.5"] == pytest.approx(0.5)
    assert res["pooled"]["mAP"] == pytest.approx(0.7 / 2)


def test_scores_required() -> None:
    gt, pred = strips([(0, 10)], [(0, 8)])
    with pytest.raises(ValueError, match="scores"):
        instance_scores(gt, pred, ["mAP"])


def coco_reference(images: list[tuple[np.ndarray, np.ndarray, dict]], max_dets: int = 100) -> np.ndarray:
    """pycocotools COCOeval(iouType="segm") stats[0:6]: AP, AP50, AP75, AP_S, AP_M, AP_L (only AP if max_dets != 100,
    as ``summarize`` hard-codes 100 detections)."""
    gt_json = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    dets = []
    for img_id, (gt, pred, scores) in enumerate(images, start=1):
        gt_json["images"].append({"id": img_id, "height": gt.shape[0], "width": gt.shape[1]})
        for lab in np.unique(gt[gt > 0]):
            rle = mask_utils.encode(np.asfortranarray((gt == lab).astype(np.uint8)))
            gt_json["annotations"].append(
                {
                    "id": len(gt_json["annotations"]) + 1,
                    "image_id": img_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": 0,
                }
            )
        for lab in np.unique(pred[pred > 0]):
            rle = mask_utils.encode(np.asfortranarray((pred == lab).astype(np.uint8)))
            dets.append({"image_id": img_id, "category_id": 1, "segmentation": rle, "score": scores[int(lab)]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_json
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets) if dets else COCO()
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if max_dets == 100:
        return np.asarray(ev.stats[:6])
    prec = ev.eval["precision"][:, :, 0, 0, -1]  # (T, R, K, A, M): all areas, last maxDets
    return np.array([prec[prec > -1].mean()])


def random_case(rng: np.random.Generator, n_images: int) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """Random GT discs (plus, in some images, a 100 x 100 "large" square); predictions: ~70 % of the GT objects
    shifted by a few pixels, plus spurious discs; random scores."""
    images = []
    for _ in range(n_images):
        gt = random_labels(rng, (200, 200), int(rng.integers(4, 14)), 30, 1000)
        if rng.random() < 0.7:
            gt[90:190, 5:105] = 1999
        shifted = np.roll(gt, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
        ids = np.unique(gt[gt > 0])
        chosen = ids[rng.random(ids.size) < 0.7]
        pred = np.where(np.isin(shifted, chosen), shifted + 2000, 0)
        spurious = random_labels(rng, (200, 200), int(rng.integers(0, 5)), 25, 1000)
        pred = np.where((pred == 0) & (spurious > 0), spurious, pred)
        ids = np.unique(pred[pred > 0])
        scores = {int(i): float(s) for i, s in zip(ids, rng.random(ids.size), strict=True)}
        images.append((gt, pred, scores))
    return images


@pytest.mark.parametrize("seed, n_images", [(0, 1), (1, 3), (2, 4)])
def test_coco_against_pycocotools(seed: int, n_images: int) -> None:
    rng = np.random.default_rng(seed)
    images = random_case(rng, n_images)
    images.append((np.zeros((200, 200), np.int64), images[0][1], images[0][2]))  # no GT, only detections
    images.append((images[0][0], np.zeros((200, 200), np.int64), {}))  # GT, no detections
    ref = coco_reference(images)
    recs = [rec(g, p, s) for g, p, s in images]
    ours = np.array(
        [
            coco_ap(recs, max_dets=100),
            coco_ap(recs, iou=0.5, max_dets=100),
            coco_ap(recs, iou=0.75, max_dets=100),
            coco_ap(recs, area="small", max_dets=100),
            coco_ap(recs, area="medium", max_dets=100),
            coco_ap(recs, area="large", max_dets=100),
        ]
    )
    ours = np.where(np.isnan(ours), -1.0, ours)
    assert np.all(ref > 0)  # every area range is populated and the case is not trivial
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    res = evaluate_pairs(images, names=["coco_ap", "coco_ap50", "coco_ap75", "coco_ap_s", "coco_ap_m", "coco_ap_l"])
    pooled = np.array([res["pooled"][k] for k in res["pooled"]])
    np.testing.assert_allclose(np.where(np.isnan(pooled), -1.0, pooled), ref, atol=1e-6)


def test_coco_max_dets() -> None:
    """More than 100 detections in one image: max_dets=100 reproduces pycocotools' default truncation."""
    rng = np.random.default_rng(5)
    gt = random_labels(rng, (200, 200), 260, 5, 5000)
    pred = np.roll(gt, (1, 0), axis=(0, 1))
    ids = np.unique(pred[pred > 0])
    assert ids.size > 100
    scores = {int(i): float(s) for i, s in zip(ids, rng.random(ids.size), strict=True)}
    recs = [rec(gt, pred, scores)]
    assert coco_ap(recs, max_dets=100) == pytest.approx(coco_reference([(gt, pred, scores)])[0], abs=1e-6)
    assert coco_ap(recs) == pytest.approx(coco_reference([(gt, pred, scores)], max_dets=10_000)[0], abs=1e-6)
    assert coco_ap(recs) > coco_ap(recs, max_dets=100)


def test_coco_bad_args() -> None:
    gt, pred = strips([(0, 10)], [(0, 8)])
    with pytest.raises(ValueError, match="area"):
        coco_ap([rec(gt, pred, {5: 1.0})], area="huge")
    with pytest.raises(ValueError, match="iou"):
        coco_ap([rec(gt, pred, {5: 1.0})], iou=0.52)
