"""Deprecated location ``cellseg_monai.networks.centerness``: an alias of the modules imported below (old imports and configs work)."""

from __future__ import annotations

import warnings

from cellseg_monai.networks.mask_rcnn.centerness import (
    CenternessModule,
    component_peaks,
    ignore_matched_negatives,
    instance_boxes,
    pixel_anchors,
)

__all__ = ["CenternessModule", "component_peaks", "ignore_matched_negatives", "instance_boxes", "pixel_anchors"]

warnings.warn(
    "cellseg_monai.networks.centerness is deprecated: use cellseg_monai.networks.mask_rcnn.centerness",
    DeprecationWarning,
    stacklevel=2,
)
