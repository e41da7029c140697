"""targets: target encodings and the geometry that a network and its loss both use (so a loss never imports a
network's internals): boxes of instance labels, per-pixel anchors, LACSS location-proposal targets."""

from __future__ import annotations

from .boxes import instance_boxes, pixel_anchors
from .locations import crop_patches, decode_lpn, encode_lpn_targets, grid_centers, window_coordinates

__all__ = [
    "crop_patches",
    "decode_lpn",
    "encode_lpn_targets",
    "grid_centers",
    "instance_boxes",
    "pixel_anchors",
    "window_coordinates",
]
