"""cellseg_monai: shared library of the cellseg-monai bundles (weakly supervised cell instance segmentation)."""

from __future__ import annotations

__version__ = "0.1.0"
