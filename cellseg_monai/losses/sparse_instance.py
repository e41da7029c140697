"""Set-prediction losses of the sparse instance branch: Hungarian matching, mask Dice + BCE, focal classification.

Prytula, "Accurate Whole Cell Instance Segmentation from Brightfield Images" (bachelor thesis, 2023), Sec. 4.3,
after SparseInst (Cheng et al., CVPR 2022, Sec. 3.3):

- Eq. 4.10–4.12, matching score between prediction i and ground-truth instance k:
  ``S(i, k) = p_i^(1 - λ) · Dice(m_i, t_k)^λ`` with p_i the class probability, m_i the mask probabilities,
  ``Dice(m, t) = 2 Σ m t / (Σ m² + Σ t²)`` and λ = 0.8;
- Eq. 4.13: the one-to-one assignment maximising Σ S (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``
  on the cost -S);
- Eq. 4.14–4.18, the loss: ``L = w_cls L_focal + w_dice L_dice + w_bce L_bce + w_obj L_obj`` — sigmoid focal loss
  (α = 0.25, γ = 2) on the class logits of **all** predictions (target 1 for matched, 0 for the rest), summed and
  divided by the number of ground-truth instances; Dice loss ``1 - Dice`` and pixel BCE on the matched masks
  (means over matched pairs); BCE of the objectness logit against the IoU of the matched binary mask with its
  ground truth (IoU-aware objectness).

:class:`SparseSEUNetLoss` adds the SE-U-Net semantic loss (:class:`cellseg_monai.losses.seunet.SEUNetLoss`) for the
jointly trained network :class:`cellseg_monai.networks.sparse_seunet.SparseSEUNet`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import convert_to_numpy
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torch.nn.modules.loss import _Loss

from cellseg_monai.losses.focal import sigmoid_focal_loss
from cellseg_monai.losses.seunet import SEUNetLoss

__all__ = [
    "SparseInstanceLoss",
    "SparseSEUNetLoss",
    "dice_coefficient_matrix",
    "hungarian_match",
    "label_masks",
    "matching_score",
]


def dice_coefficient_matrix(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """(N, P) mask probabilities, (K, P) binary targets → (N, K) ``2 Σ m t / (Σ m² + Σ t²)`` (Eq. 4.11)."""
    inter = pred @ target.T
    denom = (pred * pred).sum(1)[:, None] + (target * target).sum(1)[None, :]
    return 2 * inter / denom.clamp(min=eps)


def matching_score(class_prob: Tensor, mask_prob: Tensor, target: Tensor, lam: float = 0.8) -> Tensor:
    """Pairwise matching score ``p_i^(1-λ) · Dice(m_i, t_k)^λ`` (thesis Eq. 4.10–4.12).

    Args:
        class_prob: (N,) class probabilities in [0, 1].
        mask_prob: (N, P) mask probabilities (P pixels).
        target: (K, P) binary ground-truth masks.
        lam: λ in [0, 1], the weight of the Dice term.

    Returns:
        (N, K) scores in [0, 1].
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}.")
    dice = dice_coefficient_matrix(mask_prob, target)
    return class_prob.clamp(min=0)[:, None].pow(1 - lam) * dice.clamp(min=0).pow(lam)


def hungarian_match(cost: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment of rows (predictions) to columns (ground truth) (Eq. 4.13).

    Args:
        cost: (N, K) finite costs, N >= K or N < K (then only N ground truths are matched).

    Returns:
        ``(rows, cols)`` int64 index arrays of equal length min(N, K), rows increasing.
    """
    cost = convert_to_numpy(cost, dtype=torch.float32 if isinstance(cost, Tensor) else np.float64, wrap_sequence=True)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2D (N, K) matrix, got shape {cost.shape}.")
    if not np.all(np.isfinite(cost)):
        raise ValueError("cost holds NaN or infinite values.")
    rows, cols = linear_sum_assignment(cost)
    return rows.astype(np.int64), cols.astype(np.int64)


def label_masks(labels: Tensor) -> Tensor:
    """(H, W) integer labels → (K, H, W) float binary masks of the non-zero ids (increasing id order)."""
    ids = torch.unique(labels)
    ids = ids[ids != 0]
    return (labels[None] == ids[:, None, None]).float()


class SparseInstanceLoss(_Loss):
    """Bipartite-matching loss of a predicted instance set (thesis Eq. 4.10–4.18; see the module docstring).

    Args:
        lam: λ of the matching score.
        class_weight, dice_weight, bce_weight, objectness_weight: loss term weights (SparseInst: 2, 2, 5, 1).
        focal_alpha, focal_gamma: focal loss parameters.
        reduction: over the batch of per-image losses: "mean", "sum" or "none" ((B,)).

    ``forward(pred, labels)``: ``pred`` a dict with ``logits`` (B, N, 1), ``objectness`` (B, N, 1), ``masks``
    (B, N, H, W) logits; ``labels`` (B, 1, H, W) integer instance labels (0 = background).
    """

    def __init__(
        self,
        lam: float = 0.8,
        class_weight: float = 2.0,
        dice_weight: float = 2.0,
        bce_weight: float = 5.0,
        objectness_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        reduction: str = "mean",
    ) -> None:
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        super().__init__(reduction=reduction)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}.")
        self.lam = float(lam)
        self.weights = (float(class_weight), float(dice_weight), float(bce_weight), float(objectness_weight))
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)

    def image_loss(self, logits: Tensor, objectness: Tensor, masks: Tensor, labels: Tensor) -> Tensor:
        """Loss of one image: logits (N,), objectness (N,), masks (N, H, W) logits, labels (H, W)."""
        target = label_masks(labels).flatten(1).to(masks.dtype)
        mask_logits = masks.flatten(1)
        cls_target = torch.zeros_like(logits)
        w_cls, w_dice, w_bce, w_obj = self.weights
        zero = (logits.sum() + objectness.sum() + masks.sum()) * 0.0  # every output in the graph (DDP needs it)
        dice_loss = bce_loss = obj_loss = zero
        if len(target):
            with torch.no_grad():
                score = matching_score(torch.sigmoid(logits), torch.sigmoid(mask_logits), target, self.lam)
            rows, cols = hungarian_match(-score)
            rows_t = torch.as_tensor(rows, device=logits.device)
            cols_t = torch.as_tensor(cols, device=logits.device)
            cls_target[rows_t] = 1.0
            matched, gt = mask_logits[rows_t], target[cols_t]
            prob = torch.sigmoid(matched)
            dice_loss = (1 - torch.diagonal(dice_coefficient_matrix(prob, gt))).mean()
            bce_loss = F.binary_cross_entropy_with_logits(matched, gt)
            with torch.no_grad():
                binary = (prob > 0.5).to(gt.dtype)
                inter = (binary * gt).sum(1)
                iou = inter / (binary.sum(1) + gt.sum(1) - inter).clamp(min=1)
            obj_loss = F.binary_cross_entropy_with_logits(objectness[rows_t], iou)
        focal = sigmoid_focal_loss(logits, cls_target, self.focal_alpha, self.focal_gamma).sum() / max(len(target), 1)
        return w_cls * focal + w_dice * dice_loss + w_bce * bce_loss + w_obj * obj_loss

    def forward(self, pred: Mapping[str, Tensor], labels: Tensor) -> Tensor:
        missing = [k for k in ("logits", "objectness", "masks") if k not in pred]
        if missing:
            raise KeyError(f"prediction dict lacks {missing}; it has {sorted(pred)}.")
        masks = pred["masks"]
        if labels.ndim != 4 or labels.shape[1] != 1 or labels.shape[0] != masks.shape[0]:
            raise ValueError(f"labels must be (B, 1, H, W) for {masks.shape[0]} images, got {tuple(labels.shape)}.")
        if labels.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"labels are {tuple(labels.shape[-2:])} but masks {tuple(masks.shape[-2:])} (H, W).")
        # unbind, not masks[b]: the backward of B selections would write B zero-filled copies of the whole
        # (B, N, H, W) gradient; unbind's backward stacks the per-image gradients once
        losses = [
            self.image_loss(logit, obj, mask, label.long())
            for logit, obj, mask, label in zip(
                pred["logits"][..., 0].unbind(0),
                pred["objectness"][..., 0].unbind(0),
                masks.unbind(0),
                labels[:, 0].unbind(0),
                strict=True,
            )
        ]
        per_image = torch.stack(losses)
        if self.reduction == "mean":
            return per_image.mean()
        return per_image.sum() if self.reduction == "sum" else per_image


class SparseSEUNetLoss(_Loss):
    """Joint loss of :class:`~cellseg_monai.networks.sparse_seunet.SparseSEUNet`: semantic + sparse instance terms.

    Args:
        semantic: the semantic heads' loss; None builds :class:`cellseg_monai.losses.seunet.SEUNetLoss` with its
            default heads.
        instance: the instance set loss; None builds :class:`SparseInstanceLoss`.
        semantic_weight, instance_weight: weights of the two terms; 0 switches a term off (0 instance weight:
            SE-U-Net only).
        label_key, semantic_key: keys of the targets dict.

    ``forward(pred, targets)``: ``pred`` the network's training dict; ``targets`` a dict with ``label_key``
    (B, 1, H, W) instance labels and ``semantic_key`` (B, K, H, W) head targets
    (:class:`cellseg_monai.transforms.semantic_targets.SemanticTargetsd`), as
    :class:`cellseg_monai.engines.PrepareBatchDict` delivers them.
    """

    def __init__(
        self,
        semantic: _Loss | None = None,
        instance: _Loss | None = None,
        semantic_weight: float = 1.0,
        instance_weight: float = 1.0,
        label_key: str = "label",
        semantic_key: str = "semantic",
    ) -> None:
        super().__init__()
        self.semantic = SEUNetLoss() if semantic is None else semantic
        self.instance = SparseInstanceLoss() if instance is None else instance
        self.semantic_weight, self.instance_weight = float(semantic_weight), float(instance_weight)
        self.label_key, self.semantic_key = label_key, semantic_key

    def forward(self, pred: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(pred, Mapping) or not isinstance(targets, Mapping):
            raise TypeError("SparseSEUNetLoss needs the network's training dict and a dict of targets.")
        loss = pred["semantic"].sum() * 0.0
        if self.semantic_weight:
            loss = loss + self.semantic_weight * self.semantic(pred["semantic"], targets[self.semantic_key])
        if self.instance_weight:
            loss = loss + self.instance_weight * self.instance(pred, targets[self.label_key])
        return loss
