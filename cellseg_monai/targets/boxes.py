"""Boxes from instance labels and one anchor per feature pixel: the geometry that detection networks and their
losses both need (:class:`cellseg_monai.networks.mask_rcnn.PartialMaskRCNN` and
:class:`cellseg_monai.losses.mask_rcnn.MaskRCNNLoss`), kept here so that a loss does not import a network's
internals.

Boxes follow ``monai.apps.detection``: ``StandardMode`` with ``ij`` indexing, ``(y0, x0, y1, x1)`` in image pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.utils import convert_to_numpy
from scipy import ndimage

__all__ = ["instance_boxes", "pixel_anchors"]


def instance_boxes(labels: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes of the instances of one label image.

    Args:
        labels: (H, W) or (1, H, W) integer instance labels, 0 = background.

    Returns:
        ``(boxes, ids)``: (N, 4) float32 boxes ``(y0, x0, y1, x1)`` with exclusive ends (an instance on rows 2..4
        has y0 = 2, y1 = 5) and (N,) int64 ids, in increasing id order, on the labels' device.
    """
    device = labels.device if isinstance(labels, torch.Tensor) else torch.device("cpu")
    arr = convert_to_numpy(labels, wrap_sequence=True)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"labels must be (H, W) or (1, H, W), got shape {tuple(arr.shape)}")
    arr = arr.astype(np.int64)
    rows, ids = [], []
    for i, sl in enumerate(ndimage.find_objects(arr), start=1):
        if sl is not None:
            rows.append([sl[0].start, sl[1].start, sl[0].stop, sl[1].stop])
            ids.append(i)
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    return boxes.to(device), torch.tensor(ids, dtype=torch.int64, device=device)


def pixel_anchors(height: int, width: int, stride: int, size: torch.Tensor | list[float]) -> torch.Tensor:
    """One anchor per feature pixel: a box of ``size`` (h, w) centred at image pixel ``(i·s + s//2, j·s + s//2)``.

    ``s`` is the ``stride``. The centres are those of ``monai.apps.detection.utils.anchor_utils.AnchorGenerator``. Returns (h·w, 4) boxes in
    row-major pixel order.
    """
    size_t = size.to(torch.float32) if isinstance(size, torch.Tensor) else torch.tensor(size, dtype=torch.float32)
    cy = torch.arange(height, dtype=torch.float32, device=size_t.device) * stride + stride // 2
    cx = torch.arange(width, dtype=torch.float32, device=size_t.device) * stride + stride // 2
    yy, xx = torch.meshgrid(cy, cx, indexing="ij")
    yy, xx = yy.reshape(-1), xx.reshape(-1)
    hh, hw = size_t[0] / 2, size_t[1] / 2
    return torch.stack([yy - hh, xx - hw, yy + hh, xx + hw], dim=1)
