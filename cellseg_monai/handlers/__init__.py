"""Ignite handlers for bundle configs: metric handlers and whole-state training checkpoints."""

from __future__ import annotations

from .checkpoint import TrainingCheckpoint, latest_checkpoint
from .metrics import InstanceMetricHandler, PixelMetricHandler
from .time_limit import TrainingTimeLimit

__all__ = [
    "InstanceMetricHandler",
    "PixelMetricHandler",
    "TrainingCheckpoint",
    "TrainingTimeLimit",
    "latest_checkpoint",
]
