"""Pixel (semantic foreground) metrics: F1 / Dice, IoU of a thresholded probability, and ROC AUC.

Inputs are a foreground probability map (H, W) (any shape, values in [0, 1]) and GT instance labels of the same
shape; the GT foreground is ``label > 0``. The prediction's foreground is ``prob >= threshold`` (ImPartial,
Martinez et al. 2021, reports pixel F1 / AUC this way). For binary masks pixel F1 and Dice are the same number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.utils import convert_to_numpy
from scipy.stats import rankdata

__all__ = ["pixel_confusion", "pixel_f1", "pixel_dice", "pixel_iou", "roc_auc"]


def _numeric_array(x: Any, name: str) -> np.ndarray:
    x = np.asarray(convert_to_numpy(x, wrap_sequence=True))
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{name}: expected a numeric array, got dtype {x.dtype}")
    return x


def _pair(prob: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _numeric_array(prob, "prob").astype(np.float64).ravel()
    g = _numeric_array(gt, "gt")
    if g.size != p.size or np.squeeze(g).shape != np.squeeze(_numeric_array(prob, "prob")).shape:
        raise ValueError(f"prob and gt must have the same shape, got {np.shape(prob)} and {np.shape(gt)}")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ValueError("prob: foreground probabilities must be finite and in [0, 1]")
    return p, g.ravel() > 0


def pixel_confusion(prob: Any, gt: Any, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """Pixel counts (TP, FP, FN, TN) of ``prob >= threshold`` against ``gt > 0``.

    Args:
        prob: foreground probability (H, W) in [0, 1] (a binary mask works too).
        gt: GT labels (H, W), > 0 is foreground.
        threshold: probability threshold in [0, 1].
    """
    p, g = _pair(prob, gt)
    fg = p >= threshold
    tp = int(np.count_nonzero(fg & g))
    fp = int(np.count_nonzero(fg & ~g))
    fn = int(np.count_nonzero(~fg & g))
    return tp, fp, fn, int(p.size - tp - fp - fn)


def pixel_f1(prob: Any, gt: Any, threshold: float = 0.5) -> float:
    """Pixel F1 = 2 TP / (2 TP + FP + FN) in [0, 1]; 1.0 when both foregrounds are empty."""
    tp, fp, fn, _ = pixel_confusion(prob, gt, threshold)
    den = 2 * tp + fp + fn
    return 2 * tp / den if den else 1.0


def pixel_dice(prob: Any, gt: Any, threshold: float = 0.5) -> float:
    """Pixel Dice 2 |P ∩ G| / (|P| + |G|) in [0, 1] (equal to :func:`pixel_f1`); 1.0 when both are empty."""
    return pixel_f1(prob, gt, threshold)


def pixel_iou(prob: Any, gt: Any, threshold: float = 0.5) -> float:
    """Pixel IoU (Jaccard) TP / (TP + FP + FN) in [0, 1]; 1.0 when both foregrounds are empty."""
    tp, fp, fn, _ = pixel_confusion(prob, gt, threshold)
    den = tp + fp + fn
    return tp / den if den else 1.0


def roc_auc(prob: Any, gt: Any) -> float:
    """Area under the ROC curve of ``prob`` as a score for ``gt > 0``, by the Mann-Whitney U statistic.

    AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), R_pos = sum of the (tie-averaged) ranks of the
    foreground pixels: the probability that a random foreground pixel scores higher than a random background pixel,
    ties counting 1/2 (Hanley & McNeil 1982). Threshold free.

    Returns:
        AUC in [0, 1], or NaN when the GT has only one class (AUC undefined; MONAI reductions skip NaN).
    """
    p, g = _pair(prob, gt)
    n_pos = int(np.count_nonzero(g))
    n_neg = int(g.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p, method="average")
    r_pos = float(ranks[g].sum())
    return (r_pos - n_pos * (n_pos + 1) / 2.0) / (float(n_pos) * float(n_neg))
