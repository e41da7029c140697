"""Matching and suppression of boxes for :class:`~cellseg_monai.networks.mask_rcnn.MaskRCNN`: Faster R-CNN IoU
matching on MONAI's ``Matcher`` interface and a greedy NMS equal to MONAI's, from blocks of an IoU matrix.

Boxes are ``monai.apps.detection`` ``StandardMode`` with ``ij`` indexing: ``(y0, x0, y1, x1)`` in image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.apps.detection.utils.ATSS_matcher import Matcher
from monai.data.box_utils import box_iou

from cellseg_monai.networks.mask_rcnn.box_ops import box_iou as script_box_iou

__all__ = ["IoUMatcher", "nms"]


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int = -1, block: int = 256
) -> torch.Tensor:
    """Greedy NMS with the same result as ``monai.data.box_utils.non_max_suppression``, from blocks of IoU rows.

    MONAI's NMS recomputes (and re-validates) the IoU of each kept box against the rest in Python; on CPU with a few
    hundred kept proposals that dominated the training step. Here the boxes, sorted by decreasing score, are taken
    ``block`` at a time: the IoU (``box_iou``, MONAI's in its TorchScript-compatible form
    :func:`~cellseg_monai.networks.mask_rcnn.box_ops.box_iou`) of the block's boxes not yet suppressed with the boxes
    from the block on is computed at once, then the greedy pass reads its rows. Rows of boxes suppressed by an
    earlier block, columns of earlier boxes (already decided) and blocks after ``max_keep`` boxes are kept are never
    computed.

    Args:
        boxes: (K, 4) boxes; scores: (K,); iou_threshold: a box is dropped when its IoU with a kept, higher-scoring
            box is > this; max_keep: keep at most this many (-1: all); block: boxes per block of IoU rows (the
            result does not depend on it).

    Returns:
        (N,) int64 indices of the kept boxes, by decreasing score.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros((0,), dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    ordered = boxes[order]
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep: list[int] = []
    full = False
    for start in range(0, n, max(int(block), 1)):
        stop = min(start + max(int(block), 1), n)
        alive = torch.nonzero(~suppressed[start:stop]).squeeze(1) + start
        if alive.numel() == 0:
            continue
        rows = (script_box_iou(ordered[alive.to(boxes.device)], ordered[start:]) > iou_threshold).cpu()
        alive_list: list[int] = alive.tolist()
        for r, i in enumerate(alive_list):
            if bool(suppressed[i]):
                continue
            keep.append(i)
            if max_keep > 0 and len(keep) >= max_keep:
                full = True
                break
            suppressed[start:].logical_or_(rows[r])  # not `|=` on the slice: TorchScript would not write it back
        if full:
            break
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
