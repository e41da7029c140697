"""Ignite handlers for bundle configs: metric handlers, whole-state training checkpoints (with the run's identity and
the data pipeline's random generators, so that only the same run is resumed, exactly), explainability outputs, the
detection bundle's centerness warm-up, and the ``batch_transform`` that names per-image metric rows."""

from __future__ import annotations

from .batch_meta import meta_of
from .canonical_shape import CanonicalShapeWriter
from .centerness_warmup import CenternessWarmup
from .checkpoint import NothingToResumeError, RunFolderInUseError, TrainingCheckpoint, latest_checkpoint
from .init_weights import InitWeights, InitWeightsError, load_network_weights, resolve_init_ckpt
from .metrics import InstanceMetricHandler, PixelMetricHandler
from .pipeline_state import PipelineState
from .run_record import RESUME_SAFE_IDS, RunMismatchError, run_identity
from .time_limit import TrainingTimeLimit
from .weak_metrics import ForegroundCountHandler, PartialF1Handler, PointF1Handler, ScribbleMetricHandler

__all__ = [
    "RESUME_SAFE_IDS",
    "CanonicalShapeWriter",
    "CenternessWarmup",
    "ForegroundCountHandler",
    "InitWeights",
    "InitWeightsError",
    "InstanceMetricHandler",
    "NothingToResumeError",
    "PartialF1Handler",
    "PipelineState",
    "PixelMetricHandler",
    "PointF1Handler",
    "RunFolderInUseError",
    "RunMismatchError",
    "ScribbleMetricHandler",
    "TrainingCheckpoint",
    "TrainingTimeLimit",
    "latest_checkpoint",
    "load_network_weights",
    "meta_of",
    "resolve_init_ckpt",
    "run_identity",
]
