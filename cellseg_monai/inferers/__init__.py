"""Inferers for images of any size: tiled instance prediction with stitching."""

from __future__ import annotations

from .canonical_shape import AFFINE_ATTRIBUTES, CanonicalShapePredictor
from .tiled_instances import TiledInstanceInferer, labels_scores_predictor, tile_cores, tile_starts

__all__ = [
    "AFFINE_ATTRIBUTES",
    "CanonicalShapePredictor",
    "TiledInstanceInferer",
    "labels_scores_predictor",
    "tile_cores",
    "tile_starts",
]
