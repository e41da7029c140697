"""Instance segmentation metrics computed from one IoU matching per image.

Every metric is defined once as a function of a list of :class:`~cellseg_monai.metrics.matching.ImageMatches`:
one image gives the per-image value, all images of a dataset give the **pooled** value (counts such as
TP/FP/FN, AJI's intersections/unions or PQ's IoU sums are summed over images before the formula is applied).

Metric names (``t`` is an IoU threshold in [0, 1] written like ``0.5``; a pair may match when ``IoU >= t``, so
``t = 1.0`` means a pixel-perfect match):

==================  =====================================================================================
``f1@t``            2 TP / (2 TP + FP + FN), optimal one-to-one matching (stardist, Costa et al. MIDL 2022)
``precision@t``     TP / (TP + FP)
``recall@t``        TP / (TP + FN)
``fnr@t``           FN / #GT (false negative rate, LACSS)
``ap_dsb@t``        TP / (TP + FP + FN) (Kaggle Data Science Bowl 2018 "AP", Cellpose, ImPartial)
``ap_dsb_mean``     mean of ``ap_dsb@t`` over t = 0.5, 0.55, ..., 0.95
``f1_mean``         mean of ``f1@t`` over t = 0.1, 0.2, ..., 1.0 (Costa et al.)
``fnr_mean``        mean of ``fnr@t`` over t = 0.5, 0.55, ..., 0.95 (LACSS "average FNR")
``mdice``/``miou``  mean over GT instances of the best (max over predictions) Dice / IoU, 0 for a GT with no
                    overlapping prediction (ImPartial's instance Dice / IoU)
``aji``             Aggregated Jaccard Index (Kumar et al., IEEE TMI 2017, Algorithm 1)
``pq``/``sq``/``rq``  panoptic quality = SQ x RQ with matches at IoU > 0.5 (Kirillov et al., CVPR 2019, Eq. 1)
``ncs``             area-weighted coverage (see :func:`ncs`; the definition of Feng et al. was not available)
==================  =====================================================================================

Undefined ratios (0 / 0) follow one rule: 1.0 when the image has no error of the kind the metric counts (e.g. both
GT and prediction empty), otherwise 0.0; ``fnr`` with no GT object is 0.0. Score-ranked metrics (``ap@t``,
``mAP``, COCO AP) live in :mod:`cellseg_monai.metrics.ranking` and are reachable by name here too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from cellseg_monai.metrics.matching import ImageMatches

__all__ = [
    "THRESHOLDS_DSB",
    "THRESHOLDS_F1",
    "DEFAULT_NAMES",
    "metric_names",
    "get_metric",
    "needs_scores",
    "compute_metric",
    "instance_scores",
    "evaluate_pairs",
    "f1",
    "precision",
    "recall",
    "fnr",
    "ap_dsb",
    "ap_dsb_mean",
    "f1_mean",
    "mdice",
    "miou",
    "aji",
    "pq",
    "ncs",
]

#: IoU thresholds 0.5:0.05:0.95 (DSB 2018, COCO), correctly rounded decimals.
THRESHOLDS_DSB: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: IoU thresholds 0.1:0.1:1.0 (Costa et al. F1 curve).
THRESHOLDS_F1: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))

#: metrics computed when no names are given (all need no prediction scores).
DEFAULT_NAMES: tuple[str, ...] = (
    "f1@0.5",
    *(f"f1@{t / 10:.1f}" for t in range(1, 11) if t != 5),  # Costa et al. report F1 at IoU 0.1 ... 1.0
    "precision@0.5",
    "recall@0.5",
    "fnr@0.5",
    "ap_dsb@0.5",
    "ap_dsb@0.75",
    "ap_dsb_mean",
    "f1_mean",
    "fnr_mean",
    "aji",
    "pq",
    "sq",
    "rq",
    "mdice",
    "miou",
)

Records = Sequence[ImageMatches]


def _ratio(num: float, den: float, perfect: bool) -> float:
    if den > 0:
        return float(num) / float(den)
    return 1.0 if perfect else 0.0


def _counts(recs: Records, t: float, strict: bool = False) -> tuple[int, int, int]:
    tp = fp = fn = 0
    for r in recs:
        m = r.matching(t, strict)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    return tp, fp, fn


def _f1(recs: Records, t: float) -> float:
    tp, fp, fn = _counts(recs, t)
    return _ratio(2 * tp, 2 * tp + fp + fn, True)


def _precision(recs: Records, t: float) -> float:
    tp, fp, fn = _counts(recs, t)
    return _ratio(tp, tp + fp, fn == 0)


def _recall(recs: Records, t: float) -> float:
    tp, fp, fn = _counts(recs, t)
    return _ratio(tp, tp + fn, fp == 0)


def _fnr(recs: Records, t: float) -> float:
    tp, _, fn = _counts(recs, t)
    return _ratio(fn, tp + fn, False)


def _ap_dsb(recs: Records, t: float) -> float:
    tp, fp, fn = _counts(recs, t)
    return _ratio(tp, tp + fp + fn, True)


def _best_iou_per_gt(r: ImageMatches) -> np.ndarray:
    """(n_gt,) max IoU over predictions of each GT object (0 when nothing overlaps)."""
    ov = r.overlap
    best = np.zeros(ov.n_gt, dtype=np.float64)
    np.maximum.at(best, ov.pair_gt, ov.ious)
    return best


def _mean_best(recs: Records, dice: bool) -> float:
    total, n_gt, n_pred = 0.0, 0, 0
    for r in recs:
        best = _best_iou_per_gt(r)
        if dice:  # Dice = 2 IoU / (1 + IoU), monotonic: the best-IoU partner is also the best-Dice partner
            best = 2.0 * best / (1.0 + best)
        total += float(best.sum())
        n_gt += r.overlap.n_gt
        n_pred += r.overlap.n_pred
    return _ratio(total, n_gt, n_pred == 0)


def _aji(recs: Records) -> float:
    """Kumar et al. 2017, Algorithm 1: each GT takes the prediction of max IoU (predictions may be reused);
    C += |G ∩ S|, U += |G ∪ S|; U += areas of predictions never used."""
    c_sum, u_sum = 0, 0
    for r in recs:
        ov = r.overlap
        used = np.zeros(ov.n_pred, dtype=bool)
        union = ov.gt_areas.astype(np.int64).copy()  # GT with no overlapping prediction: U += |G|
        inter = np.zeros(ov.n_gt, dtype=np.int64)
        if ov.pair_gt.size:
            ious = ov.ious
            # per GT the pair of max IoU (ties: smallest prediction index, like argmax)
            order = np.lexsort((ov.pair_pred, -ious, ov.pair_gt))
            first = order[np.r_[True, np.diff(ov.pair_gt[order]) != 0]]
            g, p = ov.pair_gt[first], ov.pair_pred[first]
            inter[g] = ov.intersections[first]
            union[g] = ov.unions[first]
            used[p] = True
        c_sum += int(inter.sum())
        u_sum += int(union.sum()) + int(ov.pred_areas[~used].sum())
    return _ratio(c_sum, u_sum, True)


def _pq_parts(recs: Records) -> tuple[float, int, int, int]:
    iou_sum, tp, fp, fn = 0.0, 0, 0, 0
    for r in recs:
        m = r.matching(0.5, strict=True)
        iou_sum += float(m.ious.sum())
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    return iou_sum, tp, fp, fn


def _pq(recs: Records) -> float:
    iou_sum, tp, fp, fn = _pq_parts(recs)
    return _ratio(iou_sum, tp + 0.5 * fp + 0.5 * fn, True)


def _sq(recs: Records) -> float:
    iou_sum, tp, fp, fn = _pq_parts(recs)
    return _ratio(iou_sum, tp, fp + fn == 0)


def _rq(recs: Records) -> float:
    _, tp, fp, fn = _pq_parts(recs)
    return _ratio(tp, tp + 0.5 * fp + 0.5 * fn, True)


def _ncs(recs: Records) -> float:
    total, area, n_pred = 0.0, 0, 0
    for r in recs:
        best = _best_iou_per_gt(r)
        total += float((best * r.overlap.gt_areas).sum())
        area += int(r.overlap.gt_areas.sum())
        n_pred += r.overlap.n_pred
    return _ratio(total, area, n_pred == 0)


_THRESHOLDED: dict[str, Callable[[Records, float], float]] = {
    "f1": _f1,
    "precision": _precision,
    "recall": _recall,
    "fnr": _fnr,
    "ap_dsb": _ap_dsb,
}

_PLAIN: dict[str, Callable[[Records], float]] = {
    "ap_dsb_mean": lambda recs: float(np.mean([_ap_dsb(recs, t) for t in THRESHOLDS_DSB])),
    "f1_mean": lambda recs: float(np.mean([_f1(recs, t) for t in THRESHOLDS_F1])),
    "fnr_mean": lambda recs: float(np.mean([_fnr(recs, t) for t in THRESHOLDS_DSB])),
    "mdice": lambda recs: _mean_best(recs, dice=True),
    "miou": lambda recs: _mean_best(recs, dice=False),
    "aji": _aji,
    "pq": _pq,
    "sq": _sq,
    "rq": _rq,
    "ncs": _ncs,
}

_NAME_RE = re.compile(r"^([A-Za-z_0-9]+?)@([0-9]*\.?[0-9]+)$")


def _register_extra() -> None:
    """Add metrics defined in other modules (score-ranked AP, NCS) when they are available."""
    try:
        from cellseg_monai.metrics import ranking
    except ImportError:  # pragma: no cover - stage without ranking metrics
        return
    _THRESHOLDED.update(ranking.THRESHOLDED_METRICS)
    _PLAIN.update(ranking.PLAIN_METRICS)


def metric_names() -> list[str]:
    """Plain metric names and thresholded base names (written ``<base>@t``)."""
    _register_extra()
    return sorted(_PLAIN) + sorted(f"{k}@t" for k in _THRESHOLDED)


def get_metric(name: str) -> Callable[[Records], float]:
    """The function ``list[ImageMatches] -> float`` of metric ``name``.

    Raises:
        ValueError: unknown name or threshold outside [0, 1].
    """
    _register_extra()
    if name in _PLAIN:
        return _PLAIN[name]
    m = _NAME_RE.match(name)
    if m and m.group(1) in _THRESHOLDED:
        t = float(m.group(2))
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"metric {name!r}: IoU threshold must be in [0, 1]")
        fn = _THRESHOLDED[m.group(1)]
        return lambda recs: fn(recs, t)
    raise ValueError(f"unknown instance metric {name!r}; known: {', '.join(metric_names())}")


def needs_scores(name: str) -> bool:
    """Whether metric ``name`` ranks predictions by score (``ap@t``, ``mAP``, ``coco_*``)."""
    from cellseg_monai.metrics import ranking

    get_metric(name)  # validates the name
    m = _NAME_RE.match(name)
    return name in ranking.PLAIN_METRICS or bool(m and m.group(1) in ranking.THRESHOLDED_METRICS)


def compute_metric(name: str, matches: Records) -> float:
    """Value of metric ``name`` over one or several images (several images: pooled over all objects)."""
    return float(get_metric(name)(matches))


def instance_scores(gt: Any, pred: Any, names: Iterable[str] = DEFAULT_NAMES, scores: Any = None) -> dict[str, float]:
    """Many named instance metrics of one image pair from ONE overlap / matching computation.

    Args:
        gt: GT instance labels (H, W) (or (1, H, W)) integer, 0 = background.
        pred: predicted instance labels, same shape.
        names: metric names, e.g. ``("f1@0.5", "ap_dsb_mean", "mdice")``; see the module docstring.
        scores: per-prediction scores (dict ``{label id: score}`` or array indexed by label id); needed only by
            score-ranked metrics (``ap@t``, ``mAP``, ``coco_*``).

    Returns:
        ``{name: value}`` with values in [0, 1].
    """
    rec = ImageMatches.from_labels(gt, pred, scores)
    fns = {n: get_metric(n) for n in names}
    return {n: float(fn([rec])) for n, fn in fns.items()}


def evaluate_pairs(pairs: Iterable[tuple[Any, ...]], names: Iterable[str] = DEFAULT_NAMES) -> dict[str, Any]:
    """Evaluate a dataset of image pairs.

    Args:
        pairs: iterable of ``(gt, pred)`` or ``(gt, pred, scores)`` (label images (H, W); scores as in
            :func:`instance_scores`).
        names: metric names.

    Returns:
        ``{"per_image_mean": {name: mean over images}, "pooled": {name: value over all objects of all images},
        "per_image": [{name: value}, ...]}``. The per-image mean skips NaN values (a metric undefined on an
        image, e.g. COCO AP_L with no large GT object); with no pairs the means and pooled values are NaN.
    """
    names = list(names)
    fns = {n: get_metric(n) for n in names}
    recs: list[ImageMatches] = []
    per_image: list[dict[str, float]] = []
    for i, pair in enumerate(pairs):
        if len(pair) not in (2, 3):
            raise ValueError(f"pair {i}: expected (gt, pred) or (gt, pred, scores), got {len(pair)} items")
        rec = ImageMatches.from_labels(*pair)
        recs.append(rec)
        per_image.append({n: float(fn([rec])) for n, fn in fns.items()})
    if not recs:
        nan = {n: float("nan") for n in names}
        return {"per_image_mean": nan, "pooled": dict(nan), "per_image": []}
    mean = {n: _nanmean([row[n] for row in per_image]) for n in names}
    pooled = {n: float(fn(recs)) for n, fn in fns.items()}
    return {"per_image_mean": mean, "pooled": pooled, "per_image": per_image}


def _nanmean(vals: list[float]) -> float:
    arr = np.asarray(vals, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _one(name: str) -> Callable[..., float]:
    def fn(gt: Any, pred: Any) -> float:
        return compute_metric(name, [ImageMatches.from_labels(gt, pred)])

    return fn


def f1(gt: Any, pred: Any, t: float = 0.5) -> float:
    """Instance F1 = 2 TP / (2 TP + FP + FN) at IoU >= t of label images (H, W); 1.0 when both are empty."""
    return _f1([ImageMatches.from_labels(gt, pred)], t)


def precision(gt: Any, pred: Any, t: float = 0.5) -> float:
    """TP / (TP + FP) at IoU >= t; with no prediction: 1.0 if GT is empty too, else 0.0."""
    return _precision([ImageMatches.from_labels(gt, pred)], t)


def recall(gt: Any, pred: Any, t: float = 0.5) -> float:
    """TP / (TP + FN) at IoU >= t; with no GT object: 1.0 if the prediction is empty too, else 0.0."""
    return _recall([ImageMatches.from_labels(gt, pred)], t)


def fnr(gt: Any, pred: Any, t: float = 0.5) -> float:
    """False negative rate FN / #GT at IoU >= t (LACSS); 0.0 with no GT object."""
    return _fnr([ImageMatches.from_labels(gt, pred)], t)


def ap_dsb(gt: Any, pred: Any, t: float = 0.5) -> float:
    """Kaggle DSB 2018 "AP" = TP / (TP + FP + FN) at IoU >= t; 1.0 when GT and prediction are both empty."""
    return _ap_dsb([ImageMatches.from_labels(gt, pred)], t)


def ap_dsb_mean(gt: Any, pred: Any) -> float:
    """Mean of :func:`ap_dsb` over t = 0.5, 0.55, ..., 0.95 (the DSB 2018 leaderboard score of one image)."""
    return _one("ap_dsb_mean")(gt, pred)


def f1_mean(gt: Any, pred: Any) -> float:
    """Mean of :func:`f1` over t = 0.1, 0.2, ..., 1.0 (Costa et al., MIDL 2022)."""
    return _one("f1_mean")(gt, pred)


def mdice(gt: Any, pred: Any) -> float:
    """Mean over GT instances of max over predictions of Dice 2|G∩P| / (|G|+|P|) (ImPartial instance Dice)."""
    return _one("mdice")(gt, pred)


def miou(gt: Any, pred: Any) -> float:
    """Mean over GT instances of max over predictions of IoU (ImPartial instance IoU)."""
    return _one("miou")(gt, pred)


def aji(gt: Any, pred: Any) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017) of label images (H, W), in [0, 1]."""
    return _one("aji")(gt, pred)


def pq(gt: Any, pred: Any) -> float:
    """Panoptic quality SQ x RQ, matches at IoU > 0.5 (Kirillov et al. 2019), in [0, 1]."""
    return _one("pq")(gt, pred)


def ncs(gt: Any, pred: Any) -> float:
    """NCS as implemented here: area-weighted coverage of the GT nuclei, in [0, 1].

    NCS = Σ_G |G| max_P IoU(G, P) / Σ_G |G| (the "weighted coverage" of Silberman et al., ECCV 2014, also used
    by Ren & Zemel, CVPR 2017): how much of the GT nuclei area is covered by well-matching predictions.

    Note: the NCS of Feng et al. ("Robust Nucleus Detection with Partially Labeled Exemplars", arXiv:1907.09738)
    could not be looked up when this was written; this is the most plausible documented coverage score, not a
    verified reproduction of that paper's number. No GT object: 1.0 if the prediction is empty too, else 0.0.
    """
    return _one("ncs")(gt, pred)
