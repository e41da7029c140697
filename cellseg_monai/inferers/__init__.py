"""Inferers for images of any size: tiles fitted to the image, tiled instance prediction with stitching, and a
wrapper that runs any of them in the device's fast precision and layout."""

from __future__ import annotations

from .canonical_shape import AFFINE_ATTRIBUTES, CanonicalShapePredictor
from .precision import PRECISIONS, FastInferer, autocast_dtype, cpu_has_native_bfloat16
from .seunet import SEUNetInferer
from .sliding_window import FittedSlidingWindowInferer, fitted_tiles
from .tiled_instances import TiledInstanceInferer, labels_scores_predictor, tile_cores, tile_starts

__all__ = [
    "AFFINE_ATTRIBUTES",
    "PRECISIONS",
    "CanonicalShapePredictor",
    "FastInferer",
    "FittedSlidingWindowInferer",
    "SEUNetInferer",
    "autocast_dtype",
    "cpu_has_native_bfloat16",
    "fitted_tiles",
    "TiledInstanceInferer",
    "labels_scores_predictor",
    "tile_cores",
    "tile_starts",
]
