"""networks/blocks: parts shared by several networks."""

from __future__ import annotations

from .decomposed_attention import DecomposedSelfAttention
from .implicit_shape import ImplicitShapeMLP
from .lacss_lpn import LocationProposalHead, decode_lpn, encode_lpn_targets, grid_centers
from .lacss_segmentor import LacssSegmentor, crop_patches, paste_instances, window_coordinates
from .roi_align import RoIAlign

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
