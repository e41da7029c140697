"""Batch preparation and iteration for multi-input, multi-output and weak-label batches."""

from __future__ import annotations

from .meta import meta_of
from .prepare_batch import PrepareBatchDict

__all__ = ["PrepareBatchDict", "meta_of"]
