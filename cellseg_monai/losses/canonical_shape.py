"""Canonical-shape losses: BCE + smooth Dice on the combined mask, plus the nuclei-count loss.

Costa, Gaudio, Campilho & Cardoso, "Explainable Weakly-Supervised Cell Nuclei Segmentation by Canonical Shape
Learning and Transformation", MIDL 2022, Sec. 2.3-2.4. The weak label of a patch is its foreground mask and its
number of nuclei K (:mod:`cellseg_monai.annotations.foreground_count`).

    L = L_BCE(p, g) + L_Dice(p, g) + α · L_cnt,    L_cnt = (Σ_n p(z_n) - K)²,   α = 1e-2

with p the combined mask max_n p(s) p(z) of :class:`cellseg_monai.networks.canonical_shape.CanonicalShapeNet` and
g the foreground mask. Choices where the paper is silent (as far as could be checked): the Dice smoothing
(``smooth`` = 1, added to numerator and denominator), Dice per image then averaged, BCE averaged over pixels, unit
weights for BCE and Dice, and a target mask larger than the prediction (training renders at 1/4 resolution) being
area-averaged to the prediction's size (a soft target in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.loss import _Loss

__all__ = ["CanonicalShapeLoss", "count_loss", "soft_dice_loss"]

_EPS = 1e-6
_REDUCTIONS = ("mean", "sum", "none")


def count_loss(presence: Tensor, count: Tensor) -> Tensor:
    """Count loss L_cnt = (Σ_n p(z_n) - K)² per image (Sec. 2.4).

    Args:
        presence: (B, N) presence probabilities p(z) in [0, 1].
        count: (B,) or (B, 1) number of nuclei K in each patch (>= 0).

    Returns:
        (B,) squared count error.
    """
    if presence.ndim != 2:
        raise ValueError(f"presence must be (B, N); got shape {tuple(presence.shape)}.")
    count = torch.as_tensor(count, device=presence.device, dtype=presence.dtype).reshape(-1)
    if count.numel() != presence.shape[0]:
        raise ValueError(f"count must have one value per image ({presence.shape[0]}); got {count.numel()} values.")
    return (presence.sum(dim=1) - count) ** 2


def soft_dice_loss(input: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """Smooth Dice loss per image, 1 - (2 Σ p g + smooth) / (Σ p + Σ g + smooth) (Sec. 2.3).

    Args:
        input: (B, 1, H, W) probabilities in [0, 1].
        target: (B, 1, H, W) foreground in [0, 1].
        smooth: added to numerator and denominator (> 0 keeps an empty patch's loss finite, = 0 when p = g = 0).

    Returns:
        (B,) values in [0, 1].
    """
    p, g = input.flatten(1), target.flatten(1)
    return 1.0 - (2.0 * (p * g).sum(1) + smooth) / (p.sum(1) + g.sum(1) + smooth)


class CanonicalShapeLoss(_Loss):
    """BCE + smooth Dice on the combined mask vs the foreground mask, plus α · L_cnt (Costa et al. 2022, Sec. 2.3-2.4).

    Args:
        alpha: weight α of the count loss (the paper: 1e-2; 0 disables it, the "without L_cnt" ablation).
        bce_weight: weight of the BCE term (1).
        dice_weight: weight of the Dice term (1).
        smooth: Dice smoothing (1).
        reduction: "mean" | "sum" over the batch of per-image losses, or "none" for (B,) values.

    Call ``loss(input, target, presence=None, count=None)``:

    * input: (B, 1, H, W) combined mask probability in [0, 1] (the network's ``forward``), or a mapping
      ``{"combined": (B, 1, H, W), "presence": (B, N)}`` (the network's training output with ``dict_in_training``).
    * target: (B, 1, H, W) foreground mask (any dtype, > 0 = foreground, or soft values in [0, 1]), or a mapping
      ``{"mask": (B, 1, H, W), "count": (B,) or (B, 1)}``. A mask larger than ``input`` is area-averaged to its size.
    * presence: (B, N) p(z), required when ``alpha > 0``.
    * count: (B,) or (B, 1) nuclei per patch K, when not in ``target``.

    :meth:`terms` returns the individual reduced terms ("bce", "dice", "count", "total") for logging.
    """

    def __init__(
        self,
        alpha: float = 1e-2,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}.")
        if min(alpha, bce_weight, dice_weight) < 0 or smooth < 0:
            raise ValueError("alpha, bce_weight, dice_weight and smooth must be >= 0.")
        super().__init__(reduction=reduction)
        self.alpha = float(alpha)
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)

    def _unpack(self, input: Tensor, target: Tensor | Mapping, count: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if isinstance(target, Mapping):
            if "mask" not in target:
                raise ValueError(f"target mapping needs a 'mask' key (and 'count'); got keys {sorted(target)}.")
            mask, count = target["mask"], target.get("count", count)
        else:
            mask = target
        if input.ndim != 4 or input.shape[1] != 1:
            raise ValueError(f"input must be the combined mask (B, 1, H, W); got shape {tuple(input.shape)}.")
        mask = torch.as_tensor(mask, device=input.device)
        if mask.ndim != 4 or mask.shape[:2] != input.shape[:2]:
            raise ValueError(
                f"target mask must be (B, 1, H, W) like input {tuple(input.shape)}; got {tuple(mask.shape)}."
            )
        mask = mask.to(input.dtype)
        if mask.dtype.is_floating_point and (mask.min() < 0 or mask.max() > 1):
            mask = (mask > 0).to(input.dtype)
        if mask.shape[-2:] != input.shape[-2:]:
            mask = F.adaptive_avg_pool2d(mask, input.shape[-2:])
        return mask, count

    def per_image_terms(
        self,
        input: Tensor | Mapping,
        target: Tensor | Mapping,
        presence: Tensor | None = None,
        count: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Unweighted per-image terms, each (B,): "bce", "dice", "count" (zeros when α = 0), and weighted "total"."""
        if isinstance(input, Mapping):
            if "combined" not in input:
                raise ValueError(f"input mapping needs a 'combined' key (and 'presence'); got keys {sorted(input)}.")
            input, presence = input["combined"], input.get("presence", presence)
        mask, count = self._unpack(input, target, count)
        p = input.clamp(_EPS, 1.0 - _EPS)
        bce = F.binary_cross_entropy(p, mask, reduction="none").flatten(1).mean(1)
        dice = soft_dice_loss(input, mask, self.smooth)
        if self.alpha > 0:
            if presence is None or count is None:
                raise ValueError("alpha > 0 needs presence (B, N) and count (B,): pass them or set alpha=0.")
            cnt = count_loss(presence, count)
        else:
            cnt = torch.zeros_like(bce)
        total = self.bce_weight * bce + self.dice_weight * dice + self.alpha * cnt
        return {"bce": bce, "dice": dice, "count": cnt, "total": total}

    def _reduce(self, x: Tensor) -> Tensor:
        if self.reduction == "mean":
            return x.mean()
        if self.reduction == "sum":
            return x.sum()
        return x

    def terms(
        self,
        input: Tensor | Mapping,
        target: Tensor | Mapping,
        presence: Tensor | None = None,
        count: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The terms of :meth:`per_image_terms`, each reduced with ``reduction`` (for logging)."""
        return {k: self._reduce(v) for k, v in self.per_image_terms(input, target, presence, count).items()}

    def forward(
        self,
        input: Tensor | Mapping,
        target: Tensor | Mapping,
        presence: Tensor | None = None,
        count: Tensor | None = None,
    ) -> Tensor:
        """Total loss: scalar for "mean"/"sum", (B,) for "none"."""
        return self._reduce(self.per_image_terms(input, target, presence, count)["total"])
