"""Batch preparation and iteration for multi-input, multi-output and weak-label batches."""

from __future__ import annotations

from .detection import CenternessWarmup
from .meta import meta_of
from .prepare_batch import PrepareBatchDict

__all__ = ["CenternessWarmup", "PrepareBatchDict", "meta_of"]
