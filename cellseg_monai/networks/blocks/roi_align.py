"""Deprecated location ``cellseg_monai.networks.blocks.roi_align``: an alias of the modules imported below (old imports and configs work)."""

from __future__ import annotations

import warnings

from cellseg_monai.networks.mask_rcnn.roi_align import RoIAlign, roi_align

__all__ = ["RoIAlign", "roi_align"]

warnings.warn(
    "cellseg_monai.networks.blocks.roi_align is deprecated: use cellseg_monai.networks.mask_rcnn.roi_align",
    DeprecationWarning,
    stacklevel=2,
)
