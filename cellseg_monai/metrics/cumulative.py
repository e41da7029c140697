"""MONAI ``CumulativeIterationMetric`` wrappers of the instance and pixel metrics.

Each call buffers one value per image; :meth:`aggregate` reduces the buffer (NaN values are skipped, as in
MONAI's ``do_metric_reduction``). Inputs may be batch-first tensors (B, 1, H, W) or lists of channel-first
tensors (1, H, W) (decollated batches), torch tensors or MetaTensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from cellseg_monai.metrics.instance import get_metric, needs_scores
from cellseg_monai.metrics.matching import ImageMatches
from cellseg_monai.metrics.pixel import pixel_dice, pixel_f1, pixel_iou, roc_auc

__all__ = ["InstanceMetric", "PixelMetric", "instance_scores_from_map"]


def instance_scores_from_map(labels: Any, score_map: Any) -> np.ndarray:
    """Score of every instance = mean of ``score_map`` over its pixels.

    Args:
        labels: (H, W) integer instance labels, 0 = background.
        score_map: (H, W) per-pixel score (e.g. the foreground probability).

    Returns:
        (max label + 1,) float64 array indexed by label id (0 for ids absent from ``labels``).
    """
    lab = np.asarray(torch.as_tensor(labels).detach().cpu(), dtype=np.int64).ravel()
    val = np.asarray(torch.as_tensor(score_map).detach().cpu(), dtype=np.float64).ravel()
    if lab.shape != val.shape:
        raise ValueError(f"labels and score_map must have the same shape, got {lab.size} and {val.size} pixels")
    n = int(lab.max(initial=0)) + 1
    sums = np.bincount(lab, weights=val, minlength=n)
    counts = np.bincount(lab, minlength=n)
    return np.divide(sums, counts, out=np.zeros(n), where=counts > 0)


def _check_batch(y_pred: torch.Tensor, y: torch.Tensor | None, cls: str, pred_channels: int = 1) -> torch.Tensor:
    if y is None:
        raise ValueError(f"{cls}: the ground truth y is required")
    if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{cls}: y_pred and y must be torch tensors, got {type(y_pred).__name__}, {type(y).__name__}")
    if y_pred.ndim != 4 or y.ndim != 4 or y_pred.shape[1] != pred_channels or y.shape[1] != 1:
        raise ValueError(
            f"{cls}: y_pred must be (B, {pred_channels}, H, W) and y (B, 1, H, W), "
            f"got {tuple(y_pred.shape)} and {tuple(y.shape)}"
        )
    if y_pred.shape[0] != y.shape[0] or y_pred.shape[2:] != y.shape[2:]:
        raise ValueError(f"{cls}: y_pred and y shapes differ: {tuple(y_pred.shape)} vs {tuple(y.shape)}")
    return y


class _ReducedMetric(CumulativeIterationMetric):
    def __init__(self, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False) -> None:
        super().__init__()
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the buffered per-image values (B_total, 1) with ``reduction`` (default: the constructor's)."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"{type(self).__name__}: nothing to aggregate; call the metric on some data first")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f


class InstanceMetric(_ReducedMetric):
    """One named instance metric per image (see :mod:`cellseg_monai.metrics.instance` for the names).

    Args:
        name: metric name, e.g. ``"f1@0.5"``, ``"ap_dsb_mean"``, ``"aji"``, ``"pq"``, ``"mdice"``, or a score-ranked
            one (``"ap@0.5"``, ``"mAP"``, ``"coco_ap"``, ...; per image here — dataset-pooled values come from
            :func:`cellseg_monai.metrics.evaluate_pairs`).
        reduction: MONAI reduction of the buffered per-image values, ``"mean"`` by default.
        get_not_nans: also return the count of not-NaN values from :meth:`aggregate`.

    Call with ``y_pred`` = predicted instance labels (B, 1, H, W) and ``y`` = GT instance labels (B, 1, H, W)
    (integer valued, 0 = background). Score-ranked metrics take ``y_pred`` (B, 2, H, W): channel 0 the labels,
    channel 1 a per-pixel score map whose mean over an instance is its score (:func:`instance_scores_from_map`;
    in a config, ``ConcatItemsd(keys=["pred", "fg_prob"], name="pred_scored")``). Returns per-image values
    (B, 1) float32.
    """

    def __init__(
        self, name: str = "f1@0.5", reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self._fn = get_metric(name)
        self.scored = needs_scores(name)
        self.name = name

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        y = _check_batch(y_pred, y, type(self).__name__, pred_channels=2 if self.scored else 1)
        vals = []
        for b in range(y_pred.shape[0]):
            scores = instance_scores_from_map(y_pred[b, 0], y_pred[b, 1]) if self.scored else None
            vals.append(self._fn([ImageMatches.from_labels(y[b, 0], y_pred[b, 0], scores)]))
        return torch.tensor(vals, dtype=torch.float32, device=y_pred.device).reshape(-1, 1)


_PIXEL = {"f1": pixel_f1, "dice": pixel_dice, "iou": pixel_iou}


class PixelMetric(_ReducedMetric):
    """One pixel metric per image of a foreground probability against GT foreground (labels > 0).

    Args:
        name: ``"f1"``, ``"dice"``, ``"iou"`` (of ``prob >= threshold``) or ``"auc"`` (ROC AUC, threshold free;
            NaN for an image whose GT has one class only, skipped by the reduction).
        threshold: probability threshold in [0, 1].
        reduction: MONAI reduction, ``"mean"`` by default.
        get_not_nans: also return the count of not-NaN values from :meth:`aggregate`.

    Call with ``y_pred`` = foreground probability (B, 1, H, W) in [0, 1] and ``y`` = GT instance labels
    (B, 1, H, W). Returns per-image values (B, 1) float32.
    """

    def __init__(
        self,
        name: str = "f1",
        threshold: float = 0.5,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        if name not in (*_PIXEL, "auc"):
            raise ValueError(f"PixelMetric: unknown name {name!r}; use one of f1, dice, iou, auc")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"PixelMetric: threshold must be in [0, 1], got {threshold}")
        self.name = name
        self.threshold = threshold

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        y = _check_batch(y_pred, y, type(self).__name__)
        vals = []
        for b in range(y_pred.shape[0]):
            prob, gt = y_pred[b, 0], y[b, 0]
            if self.name == "auc":
                vals.append(roc_auc(prob, gt))
            else:
                vals.append(_PIXEL[self.name](prob, gt, self.threshold))
        return torch.tensor(vals, dtype=torch.float32, device=y_pred.device).reshape(-1, 1)
