"""Validation metrics that use only what the user annotated (issue 15, point 5): checkpoint selection without full labels.

A weakly supervised bundle chooses its best epoch on held-out ``val`` images that carry the same kind of weak
annotation as the training images, never their full instance labels:

* scribbles (ImPartial): pixel F1 / accuracy of the predicted foreground on the annotated pixels only
  (:func:`scribble_scores`);
* points, one per cell (LACSS): detection F1 of predicted instances against the points, a point matching the
  instance that contains it (:func:`point_counts`);
* a foreground mask and the number of nuclei (canonical shape, Costa et al.): foreground Dice and relative count
  error (:func:`foreground_count_scores`);
* full masks of some nuclei (partial Mask R-CNN, Feng et al.): F1@IoU on the outlined subset, predictions in
  unannotated places not counted as false positives (:func:`partial_counts`).

Each comes as a pure function on one image, a MONAI ``CumulativeIterationMetric`` (per-image values, reduced with
NaN skipped) and an Ignite handler in :mod:`cellseg_monai.handlers.weak_metrics`. Matching reuses
:mod:`cellseg_monai.metrics.matching`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.utils import MetricReduction, convert_to_numpy

from cellseg_monai.metrics.cumulative import _check_batch, _ReducedMetric
from cellseg_monai.metrics.matching import as_label_image, match, overlap

__all__ = [
    "ForegroundCountMetric",
    "PartialF1Metric",
    "PointF1Metric",
    "ScribbleMetric",
    "foreground_count_scores",
    "partial_counts",
    "partial_f1",
    "point_counts",
    "point_f1",
    "scribble_scores",
]


def _np(x: Any) -> np.ndarray:
    arr = convert_to_numpy(x)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected an (H, W) image (or (1, H, W)), got shape {arr.shape}")
    return arr


def _f1(tp: int, fp: int, fn: int) -> float:
    den = 2 * tp + fp + fn
    return 2 * tp / den if den else 1.0


def scribble_scores(prob: Any, scribbles: Any, threshold: float = 0.5) -> dict[str, float]:
    """Foreground prediction scored on the scribbled pixels only.

    Args:
        prob: (H, W) foreground probability in [0, 1].
        scribbles: (H, W) integer, 0 unlabelled, 1 background, >= 2 foreground (any class)
            (:mod:`cellseg_monai.annotations.scribbles`).
        threshold: a pixel is predicted foreground when ``prob >= threshold``.

    Returns:
        ``{"f1", "accuracy", "balanced_accuracy"}`` over annotated pixels: F1 of the foreground class
        (2 TP / (2 TP + FP + FN), 1.0 when neither predicted nor scribbled foreground occurs), the fraction of
        annotated pixels predicted right, and the mean of the foreground and background recalls (NaN for a class
        without strokes). All NaN when nothing is annotated.
    """
    p, s = _np(prob), _np(scribbles)
    if p.shape != s.shape:
        raise ValueError(f"prob and scribbles must have the same shape, got {p.shape} and {s.shape}")
    annotated = s > 0
    if not annotated.any():
        return {"f1": float("nan"), "accuracy": float("nan"), "balanced_accuracy": float("nan")}
    truth = s[annotated] >= 2
    pred = p[annotated] >= threshold
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    tn = int(np.count_nonzero(~pred & ~truth))
    recalls = [tp / (tp + fn) if tp + fn else float("nan"), tn / (tn + fp) if tn + fp else float("nan")]
    return {
        "f1": _f1(tp, fp, fn),
        "accuracy": (tp + tn) / truth.size,
        "balanced_accuracy": float(np.nanmean(recalls)) if not np.all(np.isnan(recalls)) else float("nan"),
    }


def point_counts(pred: Any, points: Any) -> tuple[int, int, int]:
    """(TP, FP, FN) of predicted instances against one point per cell.

    A point matches the predicted instance that contains its pixel; an instance is a true positive when it contains
    at least one point (one match per instance: the other points inside it are false negatives, a merge),
    a false positive when it contains none; points outside every instance are false negatives.

    Args:
        pred: (H, W) predicted instance labels, 0 = background.
        points: (H, W) point map, one non-zero pixel per point (:class:`~cellseg_monai.transforms.SimulatePoints`);
            two points on the same pixel count once.
    """
    ov = overlap(as_label_image(_np(points), "points"), as_label_image(_np(pred), "pred"))
    tp = int(np.unique(ov.pair_pred).size)
    return tp, ov.n_pred - tp, ov.n_gt - tp


def point_f1(pred: Any, points: Any) -> float:
    """Point detection F1 = 2 TP / (2 TP + FP + FN) (:func:`point_counts`); 1.0 with no point and no instance."""
    return _f1(*point_counts(pred, points))


def partial_counts(pred: Any, partial: Any, threshold: float = 0.5, claim: float = 0.5) -> tuple[int, int, int]:
    """(TP, FP, FN) of predicted instances against the outlined subset of the nuclei (partial exemplars).

    Predictions are matched one-to-one to the outlined nuclei at ``IoU >= threshold``
    (:func:`cellseg_monai.metrics.matching.match`). An unmatched prediction is a false positive only when at least
    ``claim`` of its pixels lie on outlined nuclei (it claims an annotated nucleus wrongly, e.g. a split or a
    merge); one lying elsewhere may be an unannotated nucleus and is not counted. Unmatched outlined nuclei are
    false negatives.

    Args:
        pred: (H, W) predicted instance labels.
        partial: (H, W) instance labels of the outlined nuclei only, 0 = background or not annotated.
        threshold: IoU threshold of a match.
        claim: fraction of a prediction's area on outlined nuclei that makes it count.
    """
    ov = overlap(as_label_image(_np(partial), "partial"), as_label_image(_np(pred), "pred"))
    m = match(ov, threshold)
    on_outlined = np.bincount(ov.pair_pred, weights=ov.intersections, minlength=ov.n_pred)
    counts = np.zeros(ov.n_pred, dtype=bool)
    counts[m.pred_index] = True
    unmatched = ~counts
    fp = int(np.count_nonzero(unmatched & (on_outlined >= claim * ov.pred_areas)))
    return m.tp, fp, m.fn


def partial_f1(pred: Any, partial: Any, threshold: float = 0.5, claim: float = 0.5) -> float:
    """F1 on the outlined subset (:func:`partial_counts`); NaN when nothing is outlined."""
    partial_arr = _np(partial)
    if not np.any(partial_arr):
        return float("nan")
    return _f1(*partial_counts(pred, partial_arr, threshold, claim))


def foreground_count_scores(pred: Any, mask: Any, count: float) -> dict[str, float]:
    """Predicted instances scored against a foreground mask and the number of nuclei.

    Args:
        pred: (H, W) predicted instance labels.
        mask: (H, W) foreground mask, > 0 = foreground.
        count: the annotated number of nuclei K.

    Returns:
        ``{"dice", "count_error", "score"}``: Dice of ``pred > 0`` with the mask (1.0 when both are empty), the
        relative count error ``|N_pred - K| / max(K, 1)`` (N_pred = number of predicted instances), and
        ``score = (dice + max(0, 1 - count_error)) / 2`` in [0, 1], higher is better (the key metric).
    """
    p, g = _np(pred), _np(mask) > 0
    if p.shape != g.shape:
        raise ValueError(f"pred and mask must have the same shape, got {p.shape} and {g.shape}")
    fg = p > 0
    inter, total = int(np.count_nonzero(fg & g)), int(np.count_nonzero(fg)) + int(np.count_nonzero(g))
    dice = 2 * inter / total if total else 1.0
    n_pred = int(np.unique(p[fg]).size)
    k = float(count)
    err = abs(n_pred - k) / max(k, 1.0)
    return {"dice": dice, "count_error": err, "score": 0.5 * (dice + max(0.0, 1.0 - err))}


def _per_image(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device).reshape(-1, 1)


class ScribbleMetric(_ReducedMetric):
    """Per-image :func:`scribble_scores` entry ``name`` (``"f1"``, ``"accuracy"``, ``"balanced_accuracy"``).

    Call with ``y_pred`` = foreground probability (B, 1, H, W) in [0, 1] and ``y`` = scribbles (B, 1, H, W).
    Returns (B, 1) float32; images without scribbles give NaN (skipped by :meth:`aggregate`).
    """

    def __init__(
        self,
        name: str = "f1",
        threshold: float = 0.5,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        if name not in ("f1", "accuracy", "balanced_accuracy"):
            raise ValueError(f"ScribbleMetric: unknown name {name!r}; use f1, accuracy or balanced_accuracy")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"ScribbleMetric: threshold must be in [0, 1], got {threshold}")
        self.name, self.threshold = name, threshold

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        y = _check_batch(y_pred, y, type(self).__name__)
        vals = [scribble_scores(y_pred[b, 0], y[b, 0], self.threshold)[self.name] for b in range(y_pred.shape[0])]
        return _per_image(vals, y_pred)


class PointF1Metric(_ReducedMetric):
    """Per-image :func:`point_f1`: ``y_pred`` = instance labels (B, 1, H, W), ``y`` = point maps (B, 1, H, W)."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        y = _check_batch(y_pred, y, type(self).__name__)
        return _per_image([point_f1(y_pred[b, 0], y[b, 0]) for b in range(y_pred.shape[0])], y_pred)


class PartialF1Metric(_ReducedMetric):
    """Per-image :func:`partial_f1`: ``y_pred`` = instance labels (B, 1, H, W), ``y`` = labels of the outlined nuclei
    (B, 1, H, W); NaN (skipped) for an image with no outlined nucleus.

    Args:
        threshold: IoU threshold of a match.
        claim: see :func:`partial_counts`.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        claim: float = 0.5,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        if not 0.0 <= threshold <= 1.0 or not 0.0 < claim <= 1.0:
            raise ValueError(
                f"PartialF1Metric: threshold in [0, 1] and claim in (0, 1] needed, got {threshold}, {claim}"
            )
        self.threshold, self.claim = threshold, claim

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        y = _check_batch(y_pred, y, type(self).__name__)
        vals = [partial_f1(y_pred[b, 0], y[b, 0], self.threshold, self.claim) for b in range(y_pred.shape[0])]
        return _per_image(vals, y_pred)


class ForegroundCountMetric(_ReducedMetric):
    """Per-image :func:`foreground_count_scores` entry ``name`` (``"score"``, ``"dice"``, ``"count_error"``).

    Call with ``y_pred`` = instance labels (B, 1, H, W), ``y`` = foreground masks (B, 1, H, W) and ``count`` =
    the annotated numbers of nuclei (B,) or (B, 1) (keyword argument).
    """

    def __init__(
        self, name: str = "score", reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        if name not in ("score", "dice", "count_error"):
            raise ValueError(f"ForegroundCountMetric: unknown name {name!r}; use score, dice or count_error")
        self.name = name

    def _compute_tensor(
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, count: Any = None, **kwargs: Any
    ) -> torch.Tensor:
        y = _check_batch(y_pred, y, type(self).__name__)
        if count is None:
            raise ValueError("ForegroundCountMetric: the annotated counts are required (count=...)")
        counts = torch.as_tensor(count, dtype=torch.float64).reshape(-1)
        if counts.numel() != y_pred.shape[0]:
            raise ValueError(f"ForegroundCountMetric: {counts.numel()} counts for a batch of {y_pred.shape[0]} images")
        vals = [
            foreground_count_scores(y_pred[b, 0], y[b, 0], float(counts[b]))[self.name] for b in range(y_pred.shape[0])
        ]
        return _per_image(vals, y_pred)
