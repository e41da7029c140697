"""Deprecated location ``cellseg_monai.networks.blocks.lacss_segmentor``: an alias of the modules imported below (old imports and configs work)."""

from __future__ import annotations

import warnings

from cellseg_monai.networks.lacss.segmentor import LacssSegmentor, paste_instances
from cellseg_monai.targets.locations import crop_patches, window_coordinates

__all__ = ["LacssSegmentor", "crop_patches", "paste_instances", "window_coordinates"]

warnings.warn(
    "cellseg_monai.networks.blocks.lacss_segmentor is deprecated: use cellseg_monai.networks.lacss.segmentor and cellseg_monai.targets.locations",
    DeprecationWarning,
    stacklevel=2,
)
