"""Deprecated location ``cellseg_monai.networks.blocks.lacss_lpn``: an alias of the modules imported below (old imports and configs work)."""

from __future__ import annotations

import warnings

from cellseg_monai.networks.lacss.lpn import LocationProposalHead
from cellseg_monai.targets.locations import decode_lpn, encode_lpn_targets, grid_centers

__all__ = ["LocationProposalHead", "decode_lpn", "encode_lpn_targets", "grid_centers"]

warnings.warn(
    "cellseg_monai.networks.blocks.lacss_lpn is deprecated: use cellseg_monai.networks.lacss.lpn and cellseg_monai.targets.locations",
    DeprecationWarning,
    stacklevel=2,
)
