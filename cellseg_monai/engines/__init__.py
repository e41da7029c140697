"""Batch preparation and iteration for multi-input, multi-output and weak-label batches, and the evaluator that
segments very large images block by block.

``CenternessWarmup`` and ``meta_of`` moved to :mod:`cellseg_monai.handlers`; reading them from here still works
(with a ``DeprecationWarning``) so that configs written as ``$cellseg_monai.engines.meta_of(...)`` keep running.
"""

from __future__ import annotations

import warnings
from typing import Any

from .blockwise import BlockwiseEvaluator, segment_item, split_at_contract
from .prepare_batch import PrepareBatchDict

__all__ = ["BlockwiseEvaluator", "PrepareBatchDict", "segment_item", "split_at_contract"]

_MOVED = {"CenternessWarmup": "cellseg_monai.handlers", "meta_of": "cellseg_monai.handlers"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        warnings.warn(
            f"cellseg_monai.engines.{name} is deprecated: use {_MOVED[name]}.{name}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
