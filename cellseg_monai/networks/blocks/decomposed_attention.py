"""Deprecated location ``cellseg_monai.networks.blocks.decomposed_attention``: an alias of the modules imported below (old imports and configs work)."""

from __future__ import annotations

import warnings

from cellseg_monai.networks.mask_rcnn.decomposed_attention import DecomposedSelfAttention

__all__ = ["DecomposedSelfAttention"]

warnings.warn(
    "cellseg_monai.networks.blocks.decomposed_attention is deprecated: use cellseg_monai.networks.mask_rcnn.decomposed_attention",
    DeprecationWarning,
    stacklevel=2,
)
