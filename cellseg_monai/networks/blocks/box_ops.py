"""Deprecated location ``cellseg_monai.networks.blocks.box_ops``: an alias of the modules imported below (old imports and configs work)."""

from __future__ import annotations

import warnings

from cellseg_monai.networks.mask_rcnn.box_ops import box_iou, decode_boxes

__all__ = ["box_iou", "decode_boxes"]

warnings.warn(
    "cellseg_monai.networks.blocks.box_ops is deprecated: use cellseg_monai.networks.mask_rcnn.box_ops",
    DeprecationWarning,
    stacklevel=2,
)
