"""Deprecated location ``cellseg_monai.networks.blocks.implicit_shape``: an alias of the modules imported below (old imports and configs work)."""

from __future__ import annotations

import warnings

from cellseg_monai.networks.canonical_shape.implicit_shape import ImplicitShapeMLP

__all__ = ["ImplicitShapeMLP"]

warnings.warn(
    "cellseg_monai.networks.blocks.implicit_shape is deprecated: use cellseg_monai.networks.canonical_shape.implicit_shape",
    DeprecationWarning,
    stacklevel=2,
)
