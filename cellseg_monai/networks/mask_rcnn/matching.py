"""Matching and suppression of boxes for :class:`~cellseg_monai.networks.mask_rcnn.MaskRCNN`: Faster R-CNN IoU
matching on MONAI's ``Matcher`` interface and a greedy NMS equal to MONAI's, from one IoU matrix.

Boxes are ``monai.apps.detection`` ``StandardMode`` with ``ij`` indexing: ``(y0, x0, y1, x1)`` in image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.apps.detection.utils.ATSS_matcher import Matcher
from monai.data.box_utils import box_iou

from cellseg_monai.networks.mask_rcnn.box_ops import box_iou as script_box_iou

__all__ = ["IoUMatcher", "nms"]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int = -1) -> torch.Tensor:
    """Greedy NMS with the same result as ``monai.data.box_utils.non_max_suppression``, from one IoU matrix.

    MONAI's NMS recomputes (and re-validates) the IoU of each kept box against the rest in Python; on CPU with a few
    hundred kept proposals that dominated the training step. Here the (K, K) matrix comes from ``box_iou`` (MONAI's,
    in its TorchScript-compatible form :func:`~cellseg_monai.networks.mask_rcnn.box_ops.box_iou`) once and the greedy
    pass only reads rows of it (on the CPU).

    Args:
        boxes: (K, 4) boxes; scores: (K,); iou_threshold: a box is dropped when its IoU with a kept, higher-scoring
            box is > this; max_keep: keep at most this many (-1: all).

    Returns:
        (N,) int64 indices of the kept boxes, by decreasing score.
    """
    if boxes.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    rows = (script_box_iou(boxes[order], boxes[order]) > iou_threshold).cpu()
    suppressed = torch.zeros(order.numel(), dtype=torch.bool)
    keep: list[int] = []
    for i in range(order.numel()):
        if bool(suppressed[i]):
            continue
        keep.append(i)
        if max_keep > 0 and len(keep) >= max_keep:
            break
        suppressed |= rows[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


class IoUMatcher(Matcher):
    """Faster R-CNN IoU matching on MONAI's ``Matcher`` interface.

    An anchor/proposal matches the box of highest IoU when that IoU is >= ``high``; below ``low`` it is background
    (``BELOW_LOW_THRESHOLD``), in between ignored (``BETWEEN_THRESHOLDS``). With ``allow_low_quality_matches`` each
    box also keeps the anchors of its highest IoU (Ren et al., Faster R-CNN), so small nuclei always get an anchor.
    """

    def __init__(self, high: float = 0.7, low: float = 0.3, allow_low_quality_matches: bool = True) -> None:
        super().__init__(similarity_fn=box_iou)
        if low > high:
            raise ValueError(f"low ({low}) must be <= high ({high})")
        self.high, self.low, self.allow_low_quality_matches = high, low, allow_low_quality_matches

    def compute_matches(
        self, boxes: torch.Tensor, anchors: torch.Tensor, num_anchors_per_level: Sequence[int], num_anchors_per_loc: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        iou = torch.as_tensor(self.similarity_fn(boxes, anchors))  # (N, M)
        vals, matches = iou.max(dim=0)
        out = matches.clone()
        out[vals < self.high] = self.BETWEEN_THRESHOLDS
        out[vals < self.low] = self.BELOW_LOW_THRESHOLD
        if self.allow_low_quality_matches:
            best = iou.max(dim=1, keepdim=True).values
            gt_idx, anchor_idx = torch.nonzero((iou == best) & (best > 0), as_tuple=True)
            out[anchor_idx] = matches[anchor_idx]
        return iou, out
