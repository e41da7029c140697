"""A set of predicted instance masks with scores → one instance label image (sparse instance inference).

SparseInst-style inference (Cheng et al., "Sparse Instance Activation for Real-Time Instance Segmentation",
CVPR 2022, Sec. 3.4; Prytula 2023, Sec. 4.3) as used by :class:`cellseg_monai.networks.sparse_seunet.SparseSEUNet`:

1. score of prediction i = class score c_i × maskness m_i, where maskness is the mean mask probability over the
   pixels the mask claims (probability > ``mask_threshold``; SOLOv2, Wang et al. 2020) and 0 for an empty mask;
2. predictions with score < ``score_threshold`` or fewer than ``min_size`` mask pixels are dropped;
3. duplicates are suppressed by greedy mask NMS: in descending score order, a mask whose IoU with an already kept
   mask exceeds ``nms_threshold`` is dropped;
4. the label image is painted: each pixel goes to the highest-scoring kept mask that claims it; masks left with
   fewer than ``min_size`` pixels disappear; labels are 1..K in descending score order.

Everything is torch (runs on the network's device, no gradient needed); numpy arrays are accepted.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = [
    "first_claiming_mask",
    "mask_iou_matrix",
    "mask_nms",
    "maskness",
    "scored_masks_to_labels",
    "sparse_instances_to_labels",
]


def maskness(mask_prob: Tensor, mask_threshold: float = 0.5) -> Tensor:
    """(N, H, W) mask probabilities → (N,) mean probability over each mask's pixels above the threshold (0 if none)."""
    claimed = (mask_prob > mask_threshold).to(mask_prob.dtype)
    area = claimed.flatten(1).sum(1)
    return (mask_prob * claimed).flatten(1).sum(1) / area.clamp(min=1.0)


def mask_iou_matrix(masks: Tensor) -> Tensor:
    """(N, H, W) binary masks → (N, N) IoU matrix (0 between two empty masks)."""
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.zeros_like(inter))


def mask_nms(masks: Tensor, scores: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Greedy mask non-maximum suppression.

    Args:
        masks: (N, H, W) binary masks.
        scores: (N,) scores.
        iou_threshold: a mask whose IoU with a higher-scoring kept mask is above this is dropped.

    Returns:
        (K,) int64 indices of the kept masks, in descending score order.
    """
    if masks.shape[0] != scores.shape[0]:
        raise ValueError(f"masks ({masks.shape[0]}) and scores ({scores.shape[0]}) differ in number.")
    order = torch.argsort(scores, descending=True, stable=True)
    # one comparison on the whole matrix, then the greedy pass on Python lists (no tensor op per mask)
    suppresses: list[list[bool]] = (mask_iou_matrix(masks[order]) > iou_threshold).cpu().tolist()
    kept: list[int] = []
    for i in range(len(suppresses)):
        row = suppresses[i]
        duplicate = False
        for j in kept:
            if row[j]:
                duplicate = True
                break
        if not duplicate:
            kept.append(i)
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]


def sparse_instances_to_labels(
    class_prob: Any,
    mask_prob: Any,
    score_threshold: float = 0.1,
    mask_threshold: float = 0.5,
    nms_threshold: float = 0.5,
    min_size: int = 16,
) -> tuple[Tensor, Tensor]:
    """Predicted set → label image (steps in the module docstring).

    Args:
        class_prob: (N,) class scores in [0, 1] (e.g. sigmoid of the class logits, or sqrt(class · objectness)).
        mask_prob: (N, H, W) mask probabilities in [0, 1].
        score_threshold: minimum of class score × maskness.
        mask_threshold: mask probability above which a pixel belongs to a mask.
        nms_threshold: mask IoU above which the lower-scoring mask is a duplicate.
        min_size: minimum mask area (px), before and after painting.

    Returns:
        ``(labels, scores)``: (H, W) int64 labels 0..K (0 = background) and (K,) float scores, ``scores[k - 1]``
        being the score of label k (descending).
    """
    class_prob, mask_prob = torch.as_tensor(class_prob), torch.as_tensor(mask_prob)
    if mask_prob.ndim != 3 or class_prob.shape != mask_prob.shape[:1]:
        raise ValueError(
            f"expected class_prob (N,) and mask_prob (N, H, W), got {tuple(class_prob.shape)} and "
            f"{tuple(mask_prob.shape)}."
        )
    for name, value in (("score", score_threshold), ("mask", mask_threshold), ("nms", nms_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}_threshold must be in [0, 1], got {value}.")
    return scored_masks_to_labels(class_prob, mask_prob, score_threshold, mask_threshold, nms_threshold, min_size)


def scored_masks_to_labels(
    class_prob: Tensor,
    mask_prob: Tensor,
    score_threshold: float = 0.1,
    mask_threshold: float = 0.5,
    nms_threshold: float = 0.5,
    min_size: int = 16,
) -> tuple[Tensor, Tensor]:
    """:func:`sparse_instances_to_labels` on tensors, without argument checks (TorchScript-compatible, so networks
    can run it in their scripted ``forward``). Same arguments and returns."""
    h, w = mask_prob.shape[1], mask_prob.shape[2]
    masks = mask_prob > mask_threshold
    claimed_f = masks.to(torch.float32)
    area = claimed_f.flatten(1).sum(1)
    # maskness (see :func:`maskness`) from the one thresholding above
    scores = class_prob.float() * ((mask_prob.float() * claimed_f).flatten(1).sum(1) / area.clamp(min=1.0))
    candidates = torch.nonzero((scores >= score_threshold) & (area >= max(min_size, 1)))[:, 0]
    empty = (torch.zeros((h, w), dtype=torch.long, device=mask_prob.device), scores.new_zeros(0))
    if candidates.numel() == 0:
        return empty
    kept = candidates[mask_nms(masks[candidates], scores[candidates], nms_threshold)]
    masks, scores = masks[kept], scores[kept]  # descending score
    owner, claimed = first_claiming_mask(masks)
    areas = torch.bincount(owner[claimed], minlength=kept.shape[0])
    survivors = torch.nonzero(areas >= max(min_size, 1))[:, 0]
    if survivors.numel() == 0:
        return empty
    new_id = torch.zeros(kept.shape[0], dtype=torch.long, device=owner.device)
    new_id[survivors] = torch.arange(1, survivors.numel() + 1, device=owner.device)
    labels = torch.where(claimed, new_id[owner], torch.zeros_like(owner))
    return labels, scores[survivors]


def first_claiming_mask(masks: Tensor) -> tuple[Tensor, Tensor]:
    """(K, H, W) bool masks → ``(owner, claimed)``: (H, W) int64 index of the first mask that claims each pixel
    (0 where none does) and (H, W) bool, any mask claims it.

    The first True along K is the largest of the descending weights K..1 over the claiming masks: one multiply and
    one max instead of an argmax along the slow (outer) axis.
    """
    k = masks.shape[0]
    if k == 0:
        none = torch.zeros(masks.shape[1:], dtype=torch.long, device=masks.device)
        return none, none > 0
    dtype = torch.int16 if k < 32767 else torch.int64
    weights = torch.arange(k, 0, -1, dtype=dtype, device=masks.device)
    top = (masks.to(dtype) * weights[:, None, None]).amax(0).long()  # k - first index, 0 where unclaimed
    claimed = top > 0
    return torch.where(claimed, k - top, torch.zeros_like(top)), claimed
