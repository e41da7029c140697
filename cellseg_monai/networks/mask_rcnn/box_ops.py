"""2-D box IoU and box decoding as in ``monai.apps.detection``, TorchScript-compatible.

``monai.data.box_utils.box_iou`` and ``monai.apps.detection.utils.box_coder.BoxCoder.decode_single`` accept NumPy
arrays too and convert through ``convert_data_type``, so a network that calls them in its ``forward`` cannot be
compiled by ``torch.jit.script`` (``monai.bundle ckpt_export``). These are their tensor-only 2-D versions, written
with the same operations in the same order, so the results are bit-identical (tests/networks/test_torchscript.py
compares them).

Boxes are ``StandardMode`` with ``ij`` indexing: ``(y0, x0, y1, x1)`` in image pixels.
"""

from __future__ import annotations

import math

import torch

__all__ = ["box_iou", "decode_boxes"]

#: ``BoxCoder``'s default bound of the decoded log-scale deltas (sides at most 1000 / 16 times the reference's)
BOXES_XFORM_CLIP = math.log(1000.0 / 16)


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) float32 boxes → (N,) areas, as ``monai.data.box_utils.box_area``."""
    if bool((boxes[:, 2:] < boxes[:, :2]).any()):
        raise ValueError("Given boxes has invalid values. The box size must be non-negative.")
    area = (boxes[:, 2] - boxes[:, 0] + 0.0) * (boxes[:, 3] - boxes[:, 1] + 0.0)
    if area.isnan().any() or area.isinf().any():
        raise ValueError("Box area is NaN or Inf.")
    return area


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(N, 4) and (M, 4) boxes → (N, M) IoU, as ``monai.data.box_utils.box_iou`` (computed in float32).

    Returns:
        ``boxes1``'s floating dtype (float32 for integer boxes).
    """
    area1 = _box_area(boxes1.to(dtype=torch.float32))
    area2 = _box_area(boxes2.to(dtype=torch.float32))
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2]).to(dtype=torch.float32)
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:]).to(dtype=torch.float32)
    inter = torch.prod((rb - lt + 0.0).clamp(min=0), dim=-1)
    union = area1[:, None] + area2 - inter
    iou = inter / (union + 1.1920928955078125e-07)  # torch.finfo(torch.float32).eps
    iou = iou.to(dtype=boxes1.dtype if boxes1.is_floating_point() else torch.float32)
    if torch.isnan(iou).any() or torch.isinf(iou).any():
        raise ValueError("Box IoU is NaN or Inf.")
    return iou


def decode_boxes(
    deltas: torch.Tensor,
    reference: torch.Tensor,
    weights: tuple[float, float, float, float],
    clip: float = BOXES_XFORM_CLIP,
) -> torch.Tensor:
    """Boxes from deltas relative to reference boxes, as ``BoxCoder(weights, clip).decode_single`` (2-D).

    Args:
        deltas: (N, 4) encoded ``(dy, dx, dh, dw)``.
        reference: (N, 4) reference boxes (anchors or proposals).
        weights: the coder's weights of (dy, dx, dh, dw).
        clip: upper bound of ``dh / weight`` and ``dw / weight`` before the exponential.

    Returns:
        (N, 4) boxes ``(y0, x0, y1, x1)``, in ``deltas``' dtype.
    """
    reference = reference.to(deltas.dtype)
    # StandardMode → CenterSizeMode, as monai.data.box_utils.convert_box_mode
    y0, x0, y1, x1 = reference[:, 0:1], reference[:, 1:2], reference[:, 2:3], reference[:, 3:4]
    centre_size = torch.cat(((y0 + y1 + 0.0) / 2.0, (x0 + x1 + 0.0) / 2.0, y1 - y0 + 0.0, x1 - x0 + 0.0), dim=-1)
    lower: list[torch.Tensor] = []
    upper: list[torch.Tensor] = []
    for axis in range(2):
        size = centre_size[:, axis + 2]
        centre = centre_size[:, axis]
        d_centre = deltas[:, axis::4] / weights[axis]
        d_size = deltas[:, axis + 2 :: 4] / weights[axis + 2]
        d_size = torch.clamp(d_size.to(torch.float32), max=clip)
        pred_centre = d_centre * size[:, None] + centre[:, None]
        pred_size = (torch.exp(d_size) * size[:, None]).to(d_centre.dtype)
        if torch.isnan(pred_size).any() or torch.isinf(pred_size).any():
            raise ValueError("pred_whd_axis is NaN or Inf.")
        half = torch.tensor(0.5, dtype=pred_centre.dtype, device=pred_size.device) * pred_size
        lower.append(pred_centre - half)
        upper.append(pred_centre + half)
    return torch.stack(lower + upper, dim=2).flatten(1)
