"""Ignite handlers of the weak-label validation metrics (:mod:`cellseg_monai.metrics.weak`): the key metric with
which a weakly supervised bundle keeps its best model, computed only from what the user annotated on ``val`` images.

The weak labels of the ``val`` images are made (or read) by the validation *pre*-processing, so MONAI keeps them in
``engine.state.batch``, not in ``engine.state.output`` (which holds image, label and what post-processing added).
These handlers therefore take the prediction from ``output_transform`` and the weak label from the batch
(``weak_key``). Example (bundle JSON, ``validate#key_metric``)::

    "val_scribble_f1": {
        "_target_": "cellseg_monai.handlers.ScribbleMetricHandler",
        "name": "f1",
        "weak_key": "scribble",
        "output_transform": "$monai.handlers.from_engine(['fg_prob'])"
    }
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.utils import MetricReduction

from cellseg_monai.metrics.weak import ForegroundCountMetric, PartialF1Metric, PointF1Metric, ScribbleMetric

__all__ = ["ForegroundCountHandler", "PartialF1Handler", "PointF1Handler", "ScribbleMetricHandler"]


def _from_batch(batch: Any, key: str) -> Any:
    """``batch[key]`` of a batch dict, or the list of ``item[key]`` of a decollated batch (list of dicts)."""
    if isinstance(batch, Mapping):
        return batch[key]
    return [item[key] for item in batch]


class _WeakLabelHandler(IgniteMetricHandler):
    """``y_pred`` from ``output_transform(engine.state.output)``, ``y`` = ``engine.state.batch[weak_key]``."""

    weak_key: str

    def iteration_completed(self, engine: Engine) -> None:
        y_pred = self._output_transform(engine.state.output)
        self.update((y_pred, _from_batch(engine.state.batch, self.weak_key)))


class ScribbleMetricHandler(_WeakLabelHandler):
    """Mean over images of a scribble metric (:class:`~cellseg_monai.metrics.weak.ScribbleMetric`).

    Args:
        name: ``"f1"``, ``"accuracy"`` or ``"balanced_accuracy"`` on the scribbled pixels.
        threshold: foreground probability threshold.
        weak_key: batch key of the (1, H, W) scribbles.
        output_transform: ``engine.state.output`` → foreground probabilities, e.g. ``from_engine(["fg_prob"])``.
    """

    def __init__(
        self,
        name: str = "f1",
        threshold: float = 0.5,
        weak_key: str = "scribble",
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        self.weak_key = weak_key
        metric_fn = ScribbleMetric(name=name, threshold=threshold, reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class PointF1Handler(_WeakLabelHandler):
    """Mean over images of the point detection F1 (:class:`~cellseg_monai.metrics.weak.PointF1Metric`);
    ``output_transform`` → instance labels, e.g. ``from_engine(["pred"])``; ``weak_key``: batch key of the point
    maps."""

    def __init__(
        self,
        weak_key: str = "points",
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        self.weak_key = weak_key
        metric_fn = PointF1Metric(reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class PartialF1Handler(_WeakLabelHandler):
    """Mean over images of the F1 on outlined nuclei (:class:`~cellseg_monai.metrics.weak.PartialF1Metric`);
    ``output_transform`` → instance labels, e.g. ``from_engine(["pred"])``; ``weak_key``: batch key of the labels
    of the outlined nuclei."""

    def __init__(
        self,
        threshold: float = 0.5,
        claim: float = 0.5,
        weak_key: str = "partial",
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        self.weak_key = weak_key
        metric_fn = PartialF1Metric(threshold=threshold, claim=claim, reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class ForegroundCountHandler(IgniteMetricHandler):
    """Mean over images of the foreground + count score (:class:`~cellseg_monai.metrics.weak.ForegroundCountMetric`).

    Args:
        name: ``"score"`` (Dice and count agreement, higher is better), ``"dice"`` or ``"count_error"``.
        mask_key, count_key: batch keys of the (1, H, W) foreground masks and the (1,) counts.
        output_transform: ``engine.state.output`` → instance labels, e.g. ``from_engine(["pred"])``.
    """

    def __init__(
        self,
        name: str = "score",
        mask_key: str = "mask",
        count_key: str = "count",
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        self.mask_key, self.count_key = mask_key, count_key
        metric_fn = ForegroundCountMetric(name=name, reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)

    def iteration_completed(self, engine: Engine) -> None:
        y_pred = self._output_transform(engine.state.output)
        batch = engine.state.batch
        self.update((y_pred, _from_batch(batch, self.mask_key), _from_batch(batch, self.count_key)))

    def update(self, output: Sequence[Any]) -> None:
        """``output`` = ``[y_pred, masks, counts]``: batch-first tensors or lists of per-image tensors."""
        if len(output) != 3:
            raise ValueError(f"ForegroundCountHandler: output must be (pred, mask, count), got {len(output)} entries")
        y_pred, mask, count = output
        if isinstance(y_pred, (list, tuple)):
            for p, m, c in zip(y_pred, mask, count, strict=True):
                self.metric_fn(p[None], m[None], count=torch.as_tensor(c).reshape(1))
        else:
            self.metric_fn(y_pred, mask, count=count)
