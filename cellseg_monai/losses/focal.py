"""Sigmoid focal loss (Lin, Goyal, Girshick, He & Dollár, "Focal Loss for Dense Object Detection", ICCV 2017).

Shared by the LACSS location proposal loss and the SparseSEU-Net classification loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["sigmoid_focal_loss"]


def sigmoid_focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise FL = -α_t (1 - p_t)^γ log p_t, same shape as ``logits``.

    Args:
        logits: raw scores, any shape.
        target: same shape, in [0, 1] (1 = positive).
        alpha: weight of the positives (negatives get 1 - α); alpha < 0 disables the weighting.
        gamma: focusing parameter γ ≥ 0 (0 = binary cross-entropy).
    """
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss
