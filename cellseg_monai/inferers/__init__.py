"""Inferers for images of any size: tiles fitted to the image, tiled instance prediction with stitching, and a
wrapper that runs any of them in the device's fast precision and layout, and one that averages them over mirrored
inputs (test-time augmentation)."""

from __future__ import annotations

from .canonical_shape import AFFINE_ATTRIBUTES, CanonicalShapePredictor
from .precision import PRECISIONS, FastInferer, autocast_dtype, cpu_has_native_bfloat16
from .seunet import SEUNetInferer
from .sliding_window import FittedSlidingWindowInferer, fitted_tiles
from .test_time import AUGMENTATIONS, FlipAveragingInferer, symmetry_transforms
from .tiled_instances import TiledInstanceInferer, labels_scores_predictor, tile_cores, tile_starts

__all__ = [
    "AFFINE_ATTRIBUTES",
    "AUGMENTATIONS",
    "PRECISIONS",
    "CanonicalShapePredictor",
    "FastInferer",
    "FittedSlidingWindowInferer",
    "SEUNetInferer",
    "FlipAveragingInferer",
    "autocast_dtype",
    "cpu_has_native_bfloat16",
    "fitted_tiles",
    "symmetry_transforms",
    "TiledInstanceInferer",
    "labels_scores_predictor",
    "tile_cores",
    "tile_starts",
]
