"""Ignite handlers for bundle configs: metric handlers, whole-state training checkpoints, explainability outputs."""

from __future__ import annotations

from .canonical_shape import CanonicalShapeWriter
from .checkpoint import TrainingCheckpoint, latest_checkpoint
from .metrics import InstanceMetricHandler, PixelMetricHandler
from .time_limit import TrainingTimeLimit

__all__ = [
    "CanonicalShapeWriter",
    "InstanceMetricHandler",
    "PixelMetricHandler",
    "TrainingCheckpoint",
    "TrainingTimeLimit",
    "latest_checkpoint",
]
