"""Ignite handlers for bundle configs: metric handlers, whole-state training checkpoints (with the run's identity and
the data pipeline's random generators, so that only the same run is resumed, exactly), explainability outputs."""

from __future__ import annotations

from .canonical_shape import CanonicalShapeWriter
from .checkpoint import NothingToResumeError, RunFolderInUseError, TrainingCheckpoint, latest_checkpoint
from .metrics import InstanceMetricHandler, PixelMetricHandler
from .pipeline_state import PipelineState
from .run_record import RESUME_SAFE_IDS, RunMismatchError, run_identity
from .time_limit import TrainingTimeLimit

__all__ = [
    "RESUME_SAFE_IDS",
    "CanonicalShapeWriter",
    "InstanceMetricHandler",
    "NothingToResumeError",
    "PipelineState",
    "PixelMetricHandler",
    "RunFolderInUseError",
    "RunMismatchError",
    "TrainingCheckpoint",
    "TrainingTimeLimit",
    "latest_checkpoint",
    "run_identity",
]
