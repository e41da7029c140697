"""Costa et al. (MIDL 2022) canonical-shape network and its part: ``network.py`` (:class:`CanonicalShapeNet`,
its :class:`DilatedResNet` encoder, rendering) and ``implicit_shape.py`` (:class:`ImplicitShapeMLP`, the implicit
canonical shape)."""

from __future__ import annotations

from .implicit_shape import ImplicitShapeMLP
from .network import BACKBONES, CanonicalShapeNet, DilatedResNet, canonical_coordinates, render_instances

__all__ = [
    "BACKBONES",
    "CanonicalShapeNet",
    "DilatedResNet",
    "ImplicitShapeMLP",
    "canonical_coordinates",
    "render_instances",
]
