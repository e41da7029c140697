"""Deprecated location: :func:`meta_of` (a ``batch_transform`` for handlers) lives in
:mod:`cellseg_monai.handlers.batch_meta`; this alias keeps old configs (``cellseg_monai.engines.meta``) working."""

from __future__ import annotations

import warnings

from cellseg_monai.handlers.batch_meta import meta_of

__all__ = ["meta_of"]

warnings.warn(
    "cellseg_monai.engines.meta is deprecated: use cellseg_monai.handlers.meta_of", DeprecationWarning, stacklevel=2
)
