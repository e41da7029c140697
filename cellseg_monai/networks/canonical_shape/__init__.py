"""Costa et al. (MIDL 2022) canonical-shape network and its part: ``network.py`` (:class:`CanonicalShapeNet`,
its :class:`DilatedResNet` encoder, rendering) and ``implicit_shape.py`` (:class:`ImplicitShapeMLP`, the implicit
canonical shape)."""

from __future__ import annotations

from .implicit_shape import ImplicitShapeMLP
from .network import (
    BACKBONES,
    CanonicalShapeNet,
    DilatedResNet,
    box_pixels,
    canonical_coordinates,
    instance_boxes,
    render_instances,
    render_points,
    shape_support_radius,
)

__all__ = [
    "BACKBONES",
    "CanonicalShapeNet",
    "DilatedResNet",
    "ImplicitShapeMLP",
    "box_pixels",
    "canonical_coordinates",
    "instance_boxes",
    "render_instances",
    "render_points",
    "shape_support_radius",
]
