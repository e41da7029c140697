"""Ignite handlers of the instance and pixel metrics, usable from bundle configs (like MONAI's ``MeanDice``).

Example (bundle JSON, evaluator ``key_val_metric``)::

    "val_f1": {
        "_target_": "cellseg_monai.handlers.metrics.InstanceMetricHandler",
        "name": "f1@0.5",
        "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"
    }
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.utils import MetricReduction

from cellseg_monai.metrics.cumulative import InstanceMetric, PixelMetric

__all__ = ["InstanceMetricHandler", "PixelMetricHandler"]


class _LabelledImagesOnly(IgniteMetricHandler):
    """Scores the images that have GT labels and skips the others: a validation set a user only scribbled
    (:func:`cellseg_monai.data.load_datalist` with ``labels_or="scribble"``) has images without ``label``. The
    value is NaN when no image of the run had labels (the weak-label key metric then selects the model)."""

    label_key = "label"
    _labelled = 0  # labelled images this process has scored since the last reset

    def reset(self) -> None:
        super().reset()
        self._labelled = 0

    def iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        if isinstance(output, list):
            labelled = [o for o in output if not isinstance(o, dict) or o.get(self.label_key) is not None]
        else:
            labelled = None if isinstance(output, dict) and output.get(self.label_key) is None else output
        if labelled is None or (isinstance(labelled, list) and not labelled):
            return
        engine.state.output = labelled  # Ignite's own update path, on the labelled images only
        self._labelled += len(labelled) if isinstance(labelled, list) else 1
        try:
            super().iteration_completed(engine)
        finally:
            engine.state.output = output

    def compute(self) -> Any:
        # every process must agree before MONAI's buffer sync, which all processes with data join (multi-GPU)
        if int(idist.all_reduce(self._labelled)) == 0:
            self._is_reduced = True
            if self._engine is not None and self._name is not None:  # no per-image values to save (MetricsSaver)
                getattr(self._engine.state, "metric_details", {}).pop(self._name, None)
            return math.nan
        return super().compute()


class InstanceMetricHandler(_LabelledImagesOnly):
    """Mean over images of one named instance metric (:class:`cellseg_monai.metrics.cumulative.InstanceMetric`).

    Args:
        name: metric name, e.g. ``"f1@0.5"``, ``"ap_dsb_mean"``, ``"aji"``, ``"pq"``, ``"mdice"``.
        reduction: MONAI reduction of the per-image values, ``"mean"`` by default.
        output_transform: callable mapping ``engine.state.output`` to ``(y_pred, y)``: predicted instance labels
            and GT instance labels, batch-first (B, 1, H, W) tensors or lists of (1, H, W) tensors, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: save the per-image values to ``engine.state.metric_details[<metric name>]``.

    Images without GT labels are skipped; NaN when none had labels.
    """

    def __init__(
        self,
        name: str = "f1@0.5",
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = InstanceMetric(name=name, reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class PixelMetricHandler(_LabelledImagesOnly):
    """Mean over images of a pixel metric (:class:`cellseg_monai.metrics.cumulative.PixelMetric`).

    Args:
        name: ``"f1"``, ``"dice"``, ``"iou"`` or ``"auc"``.
        threshold: foreground probability threshold in [0, 1] (not used by ``"auc"``).
        reduction: MONAI reduction of the per-image values, ``"mean"`` by default (NaN values skipped).
        output_transform: callable mapping ``engine.state.output`` to ``(y_pred, y)``: foreground probability
            (B, 1, H, W) in [0, 1] and GT instance labels (B, 1, H, W), or lists of (1, H, W) tensors.
        save_details: save the per-image values to ``engine.state.metric_details[<metric name>]``.
    """

    def __init__(
        self,
        name: str = "auc",
        threshold: float = 0.5,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = PixelMetric(name=name, threshold=threshold, reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
