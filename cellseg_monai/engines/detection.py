"""Deprecated location: :class:`CenternessWarmup` is an Ignite handler and lives in
:mod:`cellseg_monai.handlers.centerness_warmup`; this alias keeps old configs (``cellseg_monai.engines.detection``)
working."""

from __future__ import annotations

import warnings

from cellseg_monai.handlers.centerness_warmup import CenternessWarmup

__all__ = ["CenternessWarmup"]

warnings.warn(
    "cellseg_monai.engines.detection is deprecated: use cellseg_monai.handlers.CenternessWarmup",
    DeprecationWarning,
    stacklevel=2,
)
