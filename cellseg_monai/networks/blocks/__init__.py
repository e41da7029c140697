"""Deprecated package: its parts served one network each and moved next to it (``networks/mask_rcnn/``,
``networks/lacss/``, ``networks/canonical_shape/``), the LACSS targets and windows to
:mod:`cellseg_monai.targets.locations`. The modules here are aliases that keep old imports working."""

from __future__ import annotations

import warnings

from cellseg_monai.networks.canonical_shape.implicit_shape import ImplicitShapeMLP
from cellseg_monai.networks.lacss.lpn import LocationProposalHead
from cellseg_monai.networks.lacss.segmentor import LacssSegmentor, paste_instances
from cellseg_monai.networks.mask_rcnn.decomposed_attention import DecomposedSelfAttention
from cellseg_monai.networks.mask_rcnn.roi_align import RoIAlign
from cellseg_monai.targets.locations import (
    crop_patches,
    decode_lpn,
    encode_lpn_targets,
    grid_centers,
    window_coordinates,
)

__all__ = [
    "DecomposedSelfAttention",
    "ImplicitShapeMLP",
    "LacssSegmentor",
    "LocationProposalHead",
    "RoIAlign",
    "crop_patches",
    "decode_lpn",
    "encode_lpn_targets",
    "grid_centers",
    "paste_instances",
    "window_coordinates",
]

warnings.warn(
    "cellseg_monai.networks.blocks is deprecated: its parts live next to their network (networks/mask_rcnn, "
    "networks/lacss, networks/canonical_shape) and in cellseg_monai.targets",
    DeprecationWarning,
    stacklevel=2,
)
