"""SE-U-Net losses: multi-head weighted BCE and the reweighted focal overlap loss.

Prytula, "Accurate Whole Cell Instance Segmentation from Brightfield Images" (bachelor thesis, 2023), Sec. 4.2:

- Eq. 4.1, per head h: ``BCE_h = -mean_x [t_h log σ(y_h) + (1 - t_h) log(1 - σ(y_h))]``;
- Eq. 4.2: ``L = Σ_h w_h BCE_h`` with one weight per head;
- the overlap head (soft targets in [b, 1], :func:`cellseg_monai.transforms.semantic_targets.overlap_probability_map`)
  gets a focal, class-reweighted BCE instead: per pixel ``|t - p|^γ · BCE(p, t)`` (a focal term for soft targets,
  Lin et al. 2017), weighted so that instance pixels (t > b) and background pixels (t = b) each make half of the
  image's loss (the reweighting).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.loss import _Loss

__all__ = ["FocalOverlapLoss", "MultiHeadBCELoss", "SEUNetLoss"]


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")


def _check_pair(logits: Tensor, target: Tensor, name: str) -> None:
    if logits.ndim != 4 or logits.shape != target.shape:
        raise ValueError(f"{name}: logits and target must both be (B, K, H, W), got {logits.shape} and {target.shape}.")


class FocalOverlapLoss(_Loss):
    """Reweighted focal BCE for the overlap probability map (see the module docstring).

    Args:
        gamma: focal exponent (0 = plain BCE).
        background: target value of background pixels (Eq. 4.5); pixels above ``background + 1e-6`` are instance
            pixels.
        reweight: balance instance and background pixels per image (each half of the weight); False weights all
            pixels equally.
        reduction: over the batch of per-image losses: "mean", "sum" or "none" ((B,)).

    ``forward(logits (B, 1, H, W), target (B, 1, H, W) in [0, 1])`` → loss.
    """

    def __init__(
        self, gamma: float = 2.0, background: float = 0.1, reweight: bool = True, reduction: str = "mean"
    ) -> None:
        _check_reduction(reduction)
        super().__init__(reduction=reduction)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}.")
        self.gamma, self.background, self.reweight = float(gamma), float(background), bool(reweight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_pair(logits, target, type(self).__name__)
        target = target.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        focal = (target - torch.sigmoid(logits)).abs().pow(self.gamma) * bce
        if self.reweight:
            inside = (target > self.background + 1e-6).to(logits.dtype)
            n_in = inside.flatten(1).sum(1).view(-1, 1, 1, 1)
            n_out = (1 - inside).flatten(1).sum(1).view(-1, 1, 1, 1)
            halves = (n_in > 0).to(logits.dtype) + (n_out > 0).to(logits.dtype)  # 1 when one class is absent
            weight = (inside / n_in.clamp(min=1) + (1 - inside) / n_out.clamp(min=1)) / halves
            per_image = (weight * focal).flatten(1).sum(1)
        else:
            per_image = focal.flatten(1).mean(1)
        return _reduce(per_image, self.reduction)


class MultiHeadBCELoss(_Loss):
    """Weighted sum of per-head BCE terms (thesis Eq. 4.1–4.2).

    Args:
        weights: one weight per channel (head).
        reduction: over the batch of per-image losses: "mean", "sum" or "none" ((B,)).

    ``forward(logits (B, K, H, W), target (B, K, H, W) in [0, 1])`` → ``Σ_h w_h BCE_h``.
    """

    def __init__(self, weights: Sequence[float], reduction: str = "mean") -> None:
        _check_reduction(reduction)
        super().__init__(reduction=reduction)
        self.register_buffer("weights", torch.as_tensor([float(w) for w in weights]))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_pair(logits, target, type(self).__name__)
        if logits.shape[1] != len(self.weights):
            raise ValueError(f"{len(self.weights)} head weights for {logits.shape[1]} channels.")
        bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
        per_image = (bce.mean(dim=(2, 3)) * self.weights.to(logits)).sum(1)  # Eq. 4.1, Eq. 4.2
        return _reduce(per_image, self.reduction)


class SEUNetLoss(_Loss):
    """The SE-U-Net loss: weighted BCE for every head except "overlap", reweighted focal loss for "overlap".

    Args:
        heads: head names in channel order.
        head_weights: weight per head name (missing names weigh 1.0).
        overlap_gamma, overlap_background: see :class:`FocalOverlapLoss`.
        reduction: "mean", "sum" or "none" over the batch.

    ``forward(logits (B, K, H, W), target (B, K, H, W))`` → ``Σ_h w_h L_h``.
    """

    def __init__(
        self,
        heads: Sequence[str] = ("foreground", "border", "background", "overlap"),
        head_weights: Mapping[str, float] | None = None,
        overlap_gamma: float = 2.0,
        overlap_background: float = 0.1,
        reduction: str = "mean",
    ) -> None:
        _check_reduction(reduction)
        super().__init__(reduction=reduction)
        weights = dict(head_weights or {})
        unknown = sorted(set(weights) - set(heads))
        if unknown:
            raise ValueError(f"head_weights names heads {unknown} that are not in heads {list(heads)}.")
        self.heads = tuple(heads)
        self.bce_index = [i for i, h in enumerate(self.heads) if h != "overlap"]
        self.overlap_index = self.heads.index("overlap") if "overlap" in self.heads else None
        self.bce = MultiHeadBCELoss([weights.get(self.heads[i], 1.0) for i in self.bce_index], reduction="none")
        self.overlap_weight = float(weights.get("overlap", 1.0))
        self.overlap = FocalOverlapLoss(overlap_gamma, overlap_background, reduction="none")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_pair(logits, target, type(self).__name__)
        if logits.shape[1] != len(self.heads):
            raise ValueError(f"{logits.shape[1]} channels for heads {list(self.heads)}.")
        per_image = logits.new_zeros(logits.shape[0])
        if self.bce_index:
            per_image = per_image + self.bce(logits[:, self.bce_index], target[:, self.bce_index])
        if self.overlap_index is not None:
            i = self.overlap_index
            per_image = per_image + self.overlap_weight * self.overlap(logits[:, i : i + 1], target[:, i : i + 1])
        return _reduce(per_image, self.reduction)
