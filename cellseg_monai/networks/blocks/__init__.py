"""networks/blocks: parts shared by several networks."""

from __future__ import annotations

from .implicit_shape import ImplicitShapeMLP

__all__ = ["ImplicitShapeMLP"]
