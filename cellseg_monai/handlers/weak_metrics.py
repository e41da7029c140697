"""Ignite handlers of the weak-label validation metrics (:mod:`cellseg_monai.metrics.weak`): the key metric with
which a weakly supervised bundle keeps its best model, computed only from what the user annotated on ``val`` images.

Example (bundle JSON, ``validate#key_metric``)::

    "val_scribble_f1": {
        "_target_": "cellseg_monai.handlers.ScribbleMetricHandler",
        "name": "f1",
        "output_transform": "$monai.handlers.from_engine(['fg_prob', 'scribble'])"
    }
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.utils import MetricReduction

from cellseg_monai.metrics.weak import ForegroundCountMetric, PartialF1Metric, PointF1Metric, ScribbleMetric

__all__ = ["ForegroundCountHandler", "PartialF1Handler", "PointF1Handler", "ScribbleMetricHandler"]


class ScribbleMetricHandler(IgniteMetricHandler):
    """Mean over images of a scribble metric (:class:`~cellseg_monai.metrics.weak.ScribbleMetric`).

    Args:
        name: ``"f1"``, ``"accuracy"`` or ``"balanced_accuracy"`` on the scribbled pixels.
        threshold: foreground probability threshold.
        output_transform: ``engine.state.output`` → ``(fg probability, scribbles)``, e.g.
            ``from_engine(["fg_prob", "scribble"])``.
    """

    def __init__(
        self,
        name: str = "f1",
        threshold: float = 0.5,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = ScribbleMetric(name=name, threshold=threshold, reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class PointF1Handler(IgniteMetricHandler):
    """Mean over images of the point detection F1 (:class:`~cellseg_monai.metrics.weak.PointF1Metric`);
    ``output_transform`` → ``(instance labels, point map)``, e.g. ``from_engine(["pred", "points"])``."""

    def __init__(
        self,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = PointF1Metric(reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class PartialF1Handler(IgniteMetricHandler):
    """Mean over images of the F1 on outlined nuclei (:class:`~cellseg_monai.metrics.weak.PartialF1Metric`);
    ``output_transform`` → ``(instance labels, partial labels)``, e.g. ``from_engine(["pred", "partial"])``."""

    def __init__(
        self,
        threshold: float = 0.5,
        claim: float = 0.5,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = PartialF1Metric(threshold=threshold, claim=claim, reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class ForegroundCountHandler(IgniteMetricHandler):
    """Mean over images of the foreground + count score (:class:`~cellseg_monai.metrics.weak.ForegroundCountMetric`).

    Args:
        name: ``"score"`` (Dice and count agreement, higher is better), ``"dice"`` or ``"count_error"``.
        output_transform: ``engine.state.output`` → ``(instance labels, foreground masks, counts)``, e.g.
            ``from_engine(["pred", "mask", "count"])``: batch-first tensors or lists of per-image tensors.
    """

    def __init__(
        self,
        name: str = "score",
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = ForegroundCountMetric(name=name, reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
        self._skip_unrolling = True  # Ignite unrolls lists of (y_pred, y) pairs only; update() unrolls the triple

    def update(self, output: Sequence[Any]) -> None:
        """``output`` = ``[y_pred, mask, count]`` (three entries, unlike MONAI's two)."""
        if len(output) != 3:
            raise ValueError(f"ForegroundCountHandler: output must be (pred, mask, count), got {len(output)} entries")
        y_pred, mask, count = output
        if isinstance(y_pred, (list, tuple)):
            for p, m, c in zip(y_pred, mask, count, strict=True):
                self.metric_fn(p[None], m[None], count=torch.as_tensor(c).reshape(1))
        else:
            self.metric_fn(y_pred, mask, count=count)
