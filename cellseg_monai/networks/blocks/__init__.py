"""networks/blocks: parts shared by several networks."""

from __future__ import annotations

from .decomposed_attention import DecomposedSelfAttention
from .implicit_shape import ImplicitShapeMLP
from .roi_align import RoIAlign, roi_align

__all__ = ["DecomposedSelfAttention", "ImplicitShapeMLP", "RoIAlign", "roi_align"]
