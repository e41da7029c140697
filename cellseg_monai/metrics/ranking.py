"""Score-ranked detection metrics: LACSS-style average precision and COCO mask AP.

Both use the unique greedy matching of detections visited by descending score
(:func:`cellseg_monai.metrics.matching.match_greedy`), so every prediction needs a score (e.g. its mean
foreground probability or detector confidence). Every function takes a list of
:class:`~cellseg_monai.metrics.matching.ImageMatches` built with scores: one image gives the per-image value, a
list of images the dataset value (detections of all images ranked together, as COCO does).

* ``ap@t`` (LACSS, Shrestha et al.): AP = (1 / #GT) Σ_k precision@k over the ranks k that are true positives,
  precision@k = #TP in the top k / k (non-interpolated area under the precision-recall curve). ``mAP`` is its
  mean over t = 0.5:0.05:0.95. No GT: 1.0 if there is no prediction either, else 0.0.
* ``coco_ap``, ``coco_ap50``, ``coco_ap75``, ``coco_ap_s``, ``coco_ap_m``, ``coco_ap_l``: COCO mask AP
  (Lin et al. 2014; ``pycocotools.cocoeval.COCOeval`` with ``iouType="segm"``, one category, no crowd regions):
  101-point interpolated precision averaged over t = ``np.linspace(0.5, 0.95, 10)``; object areas small <= 32²,
  medium 32²..96², large >= 96² pixels (bounds inclusive, as pycocotools). NaN where pycocotools reports -1 (no
  GT object in the area range). pycocotools keeps the 100 best detections per image; cell images often hold
  more, so ``max_dets=None`` (keep all) is the default here; pass ``max_dets=100`` for the pycocotools number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cellseg_monai.metrics.matching import ImageMatches

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "COCO_RECALL_THRESHOLDS",
    "COCO_AREA_RANGES",
    "ap_ranked",
    "map_ranked",
    "coco_precision",
    "coco_ap",
    "THRESHOLDED_METRICS",
    "PLAIN_METRICS",
]

#: COCOeval ``params.iouThrs``.
COCO_IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: COCOeval ``params.recThrs`` (101 recall points).
COCO_RECALL_THRESHOLDS: np.ndarray = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: COCOeval ``params.areaRng`` in pixels (bounds inclusive).
COCO_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
_DSB = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

Records = Sequence[ImageMatches]


def ap_ranked(recs: Records, t: float = 0.5) -> float:
    """LACSS average precision at IoU >= t over one or several images (detections ranked together).

    Returns:
        AP in [0, 1] = Σ_{k: rank k is a TP} precision@k / #GT.
    """
    scores, hits, n_gt = [], [], 0
    for r in recs:
        m = r.greedy(t)
        assert r.scores is not None  # greedy() checked
        hit = np.zeros(r.overlap.n_pred, dtype=bool)
        hit[m.pred_index] = True
        scores.append(r.scores)
        hits.append(hit)
        n_gt += r.overlap.n_gt
    s, h = np.concatenate(scores) if scores else np.zeros(0), np.concatenate(hits) if hits else np.zeros(0, bool)
    if n_gt == 0:
        return 1.0 if s.size == 0 else 0.0
    h = h[np.argsort(-s, kind="mergesort")]
    prec_at_k = np.cumsum(h) / np.arange(1, h.size + 1)
    return float(prec_at_k[h].sum() / n_gt)


def map_ranked(recs: Records) -> float:
    """Mean of :func:`ap_ranked` over t = 0.5, 0.55, ..., 0.95 (LACSS mAP)."""
    return float(np.mean([ap_ranked(recs, t) for t in _DSB]))


def _coco_image(
    r: ImageMatches, a_rng: tuple[float, float], max_dets: int | None, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """COCOeval.evaluateImg for one image: (scores (D,), matched (T, D), ignored (T, D), #regular GT)."""
    ov = r.overlap
    if r.scores is None:
        raise ValueError("COCO AP needs per-instance scores; pass scores for the predictions")
    if ov.n_gt == 0 and ov.n_pred == 0:
        return None
    order = np.argsort(-r.scores, kind="mergesort")
    if max_dets is not None:
        order = order[:max_dets]
    rank = np.full(ov.n_pred, -1, dtype=np.int64)
    rank[order] = np.arange(order.size)
    gt_ig = (ov.gt_areas < a_rng[0]) | (ov.gt_areas > a_rng[1])
    # gt visiting order in pycocotools: regular GT first, then ignored, each in label order (mergesort)
    gt_pos = np.empty(ov.n_gt, dtype=np.int64)
    gt_pos[np.argsort(gt_ig, kind="mergesort")] = np.arange(ov.n_gt)
    ious = ov.ious
    keep = rank[ov.pair_pred] >= 0
    pd_, pg, pi = rank[ov.pair_pred[keep]], ov.pair_gt[keep], ious[keep]
    by_det = np.argsort(pd_, kind="stable")
    pd_, pg, pi = pd_[by_det], pg[by_det], pi[by_det]
    starts = np.searchsorted(pd_, np.arange(order.size + 1))
    n_d, n_t = order.size, len(thresholds)
    matched = np.zeros((n_t, n_d), dtype=bool)
    ignored = np.zeros((n_t, n_d), dtype=bool)
    for ti, t in enumerate(thresholds):
        thr = min(float(t), 1 - 1e-10)
        gt_used = np.zeros(ov.n_gt, dtype=bool)
        for d in range(n_d):
            best_key, best_g = None, -1
            for j in range(starts[d], starts[d + 1]):
                g = pg[j]
                if gt_used[g] or pi[j] < thr:
                    continue
                # prefer regular GT, then higher IoU, then later in pycocotools' visiting order
                key = (not gt_ig[g], pi[j], gt_pos[g])
                if best_key is None or key > best_key:
                    best_key, best_g = key, g
            if best_g >= 0:
                gt_used[best_g] = True
                matched[ti, d] = True
                ignored[ti, d] = gt_ig[best_g]
    det_area = ov.pred_areas[order]
    out_of_range = (det_area < a_rng[0]) | (det_area > a_rng[1])
    ignored |= ~matched & out_of_range[None, :]
    return r.scores[order], matched, ignored, int((~gt_ig).sum())


def coco_precision(
    recs: Records,
    area: str = "all",
    max_dets: int | None = None,
    thresholds: np.ndarray = COCO_IOU_THRESHOLDS,
) -> np.ndarray:
    """COCOeval.accumulate precision (T, 101) of one category; rows of -1 where no GT is in the area range."""
    if area not in COCO_AREA_RANGES:
        raise ValueError(f"area must be one of {list(COCO_AREA_RANGES)}, got {area!r}")
    a_rng = COCO_AREA_RANGES[area]
    per = [e for e in (_coco_image(r, a_rng, max_dets, thresholds) for r in recs) if e is not None]
    n_t, n_r = len(thresholds), COCO_RECALL_THRESHOLDS.size
    precision = -np.ones((n_t, n_r))
    if not per:
        return precision
    scores = np.concatenate([e[0] for e in per])
    inds = np.argsort(-scores, kind="mergesort")
    dtm = np.concatenate([e[1] for e in per], axis=1)[:, inds]
    dt_ig = np.concatenate([e[2] for e in per], axis=1)[:, inds]
    npig = sum(e[3] for e in per)
    if npig == 0:
        return precision
    tp_sum = np.cumsum(dtm & ~dt_ig, axis=1).astype(np.float64)
    fp_sum = np.cumsum(~dtm & ~dt_ig, axis=1).astype(np.float64)
    for ti in range(n_t):
        tp, fp = tp_sum[ti], fp_sum[ti]
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1] if pr.size else pr  # interpolated (monotone) precision
        q = np.zeros(n_r)
        idx = np.searchsorted(rc, COCO_RECALL_THRESHOLDS, side="left")
        valid = idx < pr.size
        q[valid] = pr[idx[valid]]
        # pycocotools stops at the first recall point it cannot reach; later points stay 0 as here
        precision[ti] = q
    return precision


def coco_ap(recs: Records, iou: float | None = None, area: str = "all", max_dets: int | None = None) -> float:
    """COCO mask AP (``COCOeval.summarize`` stat): mean interpolated precision over recall points and IoU thresholds.

    Args:
        recs: images with scores.
        iou: a single IoU threshold of :data:`COCO_IOU_THRESHOLDS` (0.5 for AP50, 0.75 for AP75) or None for all.
        area: ``"all"``, ``"small"``, ``"medium"`` or ``"large"``.
        max_dets: detections kept per image (highest scores), None for all; pycocotools uses 100.

    Returns:
        AP in [0, 1], NaN when no GT object falls in the area range (pycocotools: -1).
    """
    prec = coco_precision(recs, area, max_dets)
    if iou is not None:
        sel = np.flatnonzero(np.isclose(COCO_IOU_THRESHOLDS, iou))
        if sel.size != 1:
            raise ValueError(f"iou must be one of {COCO_IOU_THRESHOLDS.tolist()} or None, got {iou}")
        prec = prec[sel]
    valid = prec[prec > -1]
    return float(valid.mean()) if valid.size else float("nan")


#: metrics written ``<name>@t``, used by :mod:`cellseg_monai.metrics.instance`.
THRESHOLDED_METRICS: dict[str, Callable[[Records, float], float]] = {"ap": ap_ranked}
#: plain metrics, used by :mod:`cellseg_monai.metrics.instance`.
PLAIN_METRICS: dict[str, Callable[[Records], float]] = {
    "mAP": map_ranked,
    "coco_ap": lambda recs: coco_ap(recs),
    "coco_ap50": lambda recs: coco_ap(recs, iou=0.5),
    "coco_ap75": lambda recs: coco_ap(recs, iou=0.75),
    "coco_ap_s": lambda recs: coco_ap(recs, area="small"),
    "coco_ap_m": lambda recs: coco_ap(recs, area="medium"),
    "coco_ap_l": lambda recs: coco_ap(recs, area="large"),
}
