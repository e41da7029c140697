"""Weak-label validation metrics against hand-counted cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import from_engine

from cellseg_monai.handlers import ForegroundCountHandler, PartialF1Handler, PointF1Handler, ScribbleMetricHandler
from cellseg_monai.metrics.weak import (
    ForegroundCountMetric,
    PartialF1Metric,
    PointF1Metric,
    ScribbleMetric,
    foreground_count_scores,
    partial_counts,
    partial_f1,
    point_counts,
    point_f1,
    scribble_scores,
)


def _scribble_case() -> tuple[np.ndarray, np.ndarray]:
    """4×4: fg strokes (2) on 3 pixels, bg strokes (1) on 4 pixels, the rest unlabelled."""
    s = np.zeros((4, 4), np.int32)
    s[0, 0:3] = 2
    s[3, :] = 1
    p = np.full((4, 4), 0.9)  # unlabelled pixels predicted fg: must not count
    p[0, 2] = 0.1  # one fg stroke pixel missed (FN)
    p[3, 0] = 0.7  # one bg stroke pixel predicted fg (FP)
    p[3, 1:] = 0.2  # three bg pixels right (TN)
    return p, s


def test_scribble_scores_count_annotated_pixels_only() -> None:
    p, s = _scribble_case()
    out = scribble_scores(p, s, 0.5)
    tp, fp, fn, tn = 2, 1, 1, 3
    assert out["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert out["accuracy"] == pytest.approx((tp + tn) / 7)
    assert out["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    # the threshold is inclusive
    assert scribble_scores(np.full((4, 4), 0.5), s, 0.5)["f1"] == pytest.approx(2 * 3 / (2 * 3 + 4))


def test_scribble_scores_nan_without_scribbles() -> None:
    out = scribble_scores(np.ones((3, 3)), np.zeros((3, 3), np.int32))
    assert all(math.isnan(v) for v in out.values())


def test_scribble_metric_batches_and_skips_unscribbled_images() -> None:
    p, s = _scribble_case()
    y_pred = torch.tensor(np.stack([p, p]))[:, None]
    y = torch.tensor(np.stack([s, np.zeros_like(s)]))[:, None]
    metric = ScribbleMetric("f1")
    vals = metric(y_pred, y)
    assert vals.shape == (2, 1) and math.isnan(float(vals[1, 0]))
    assert float(metric.aggregate()) == pytest.approx(4 / 6)


def _points_case() -> tuple[np.ndarray, np.ndarray]:
    """Three predicted instances: A holds 2 points (merge), B holds 1, C none; one point on background."""
    pred = np.zeros((10, 10), np.int32)
    pred[0:4, 0:4] = 1  # A
    pred[0:4, 6:10] = 2  # B
    pred[6:10, 0:4] = 3  # C
    pts = np.zeros((10, 10), np.int32)
    pts[1, 1], pts[2, 2] = 1, 2  # both in A
    pts[1, 8] = 3  # in B
    pts[8, 8] = 4  # background
    return pred, pts


def test_point_counts_by_hand() -> None:
    pred, pts = _points_case()
    assert point_counts(pred, pts) == (2, 1, 2)  # TP: A, B; FP: C; FN: the second point in A, the background one
    assert point_f1(pred, pts) == pytest.approx(4 / (4 + 1 + 2))
    assert point_f1(np.zeros((5, 5), np.int32), np.zeros((5, 5), np.int32)) == 1.0
    assert point_counts(np.zeros((5, 5), np.int32), pts[:5, :5]) == (0, 0, 2)


def test_point_metric_and_handler_mean_over_images() -> None:
    pred, pts = _points_case()
    perfect = np.where(pts > 0, pts, 0)  # each point its own instance
    y_pred = [torch.tensor(pred)[None], torch.tensor(perfect)[None]]
    y = [torch.tensor(pts)[None], torch.tensor(pts)[None]]
    metric = PointF1Metric()
    metric(y_pred, y)
    assert float(metric.aggregate()) == pytest.approx((4 / 7 + 1.0) / 2)
    assert _run_handler(PointF1Handler(output_transform=from_engine(["pred"])), y_pred, y, "points") == (
        pytest.approx((4 / 7 + 1.0) / 2)
    )


def _partial_case() -> tuple[np.ndarray, np.ndarray]:
    """Outlined nuclei 1 and 2 (of more, unannotated); predictions: a match of 1, a half of 2 (split), an object
    in an unannotated place."""
    partial = np.zeros((12, 12), np.int32)
    partial[0:4, 0:4] = 1
    partial[0:4, 6:10] = 2
    pred = np.zeros_like(partial)
    pred[0:4, 0:4] = 5  # IoU 1 with nucleus 1
    pred[0:4, 6:8] = 6  # half of nucleus 2: IoU 0.5 -> matches at 0.5
    pred[0:4, 8:10] = 7  # other half: unmatched, lies on an outlined nucleus -> FP
    pred[8:12, 8:12] = 8  # unannotated place -> not counted
    return pred, partial


def test_partial_counts_by_hand() -> None:
    pred, partial = _partial_case()
    assert partial_counts(pred, partial, 0.5) == (2, 1, 0)
    assert partial_f1(pred, partial, 0.5) == pytest.approx(4 / 5)
    assert partial_counts(pred, partial, 0.6) == (1, 2, 1)  # at IoU 0.6 both halves are FPs and nucleus 2 a FN
    assert math.isnan(partial_f1(pred, np.zeros_like(partial)))


def test_partial_claim_threshold() -> None:
    partial = np.zeros((6, 6), np.int32)
    partial[0:2, 0:2] = 1
    pred = np.zeros_like(partial)
    pred[0:2, 1:5] = 3  # 2 of its 8 pixels on the outlined nucleus: IoU 2/10, unmatched
    assert partial_counts(pred, partial, 0.5, claim=0.5) == (0, 0, 1)
    assert partial_counts(pred, partial, 0.5, claim=0.25) == (0, 1, 1)


def test_partial_metric() -> None:
    pred, partial = _partial_case()
    metric = PartialF1Metric(threshold=0.5)
    out = metric(torch.tensor(pred)[None, None], torch.tensor(partial)[None, None])
    assert float(out[0, 0]) == pytest.approx(0.8)
    assert _run_handler(
        PartialF1Handler(output_transform=from_engine(["pred"])),
        [torch.tensor(pred)[None]],
        [torch.tensor(partial)[None]],
        "partial",
    ) == pytest.approx(0.8)


def test_foreground_count_scores_by_hand() -> None:
    mask = np.zeros((4, 4), np.int32)
    mask[:, :2] = 1  # 8 fg pixels
    pred = np.zeros((4, 4), np.int32)
    pred[:2, :2] = 1
    pred[:2, 2:] = 2  # 8 predicted pixels, 4 of them on the mask; 2 instances
    out = foreground_count_scores(pred, mask, count=4)
    assert out["dice"] == pytest.approx(2 * 4 / 16)
    assert out["count_error"] == pytest.approx(2 / 4)
    assert out["score"] == pytest.approx((0.5 + 0.5) / 2)
    assert foreground_count_scores(pred, mask, count=0)["count_error"] == pytest.approx(2.0)
    assert foreground_count_scores(pred, mask, count=0)["score"] == pytest.approx(0.25)


def test_foreground_count_metric_and_handler() -> None:
    mask = np.zeros((4, 4), np.int32)
    mask[:, :2] = 1
    pred = np.zeros((4, 4), np.int32)
    pred[:, :2] = 3  # perfect foreground, one instance
    metric = ForegroundCountMetric("count_error")
    out = metric(
        torch.tensor(np.stack([pred, pred]))[:, None],
        torch.tensor(np.stack([mask, mask]))[:, None],
        count=torch.tensor([[1.0], [2.0]]),
    )
    assert out[:, 0].tolist() == pytest.approx([0.0, 0.5])
    with pytest.raises(ValueError, match="counts"):
        metric(torch.tensor(pred)[None, None], torch.tensor(mask)[None, None])

    handler = ForegroundCountHandler(
        mask_key="weak_mask", count_key="weak_count", output_transform=from_engine(["pred"])
    )
    item = {"pred": torch.tensor(pred)[None], "weak_mask": torch.tensor(mask)[None], "weak_count": torch.tensor([2.0])}
    engine = _evaluator([[item]])
    handler.attach(engine, "fg_count")
    engine.run([[item]], max_epochs=1)
    assert engine.state.metrics["fg_count"] == pytest.approx((1.0 + 0.5) / 2)


def _evaluator(batches: list[list[dict]]) -> Engine:
    """Like MONAI's evaluator after post-processing: ``state.batch`` and ``state.output`` are decollated lists of
    dicts; the weak label (made by the pre-processing) is only in the batch."""

    def step(engine: Engine, batch: list[dict]) -> list[dict]:
        return [{"pred": item["pred"]} for item in batch]

    return Engine(step)


def _run_handler(handler, y_pred: list, y: list, key: str) -> float:
    batches = [[{"pred": p, key: t}] for p, t in zip(y_pred, y, strict=True)]
    engine = _evaluator(batches)
    handler.attach(engine, "m")
    engine.run(batches, max_epochs=1)
    return engine.state.metrics["m"]


def test_scribble_handler() -> None:
    p, s = _scribble_case()
    handler = ScribbleMetricHandler("accuracy", output_transform=from_engine(["pred"]))
    assert _run_handler(handler, [torch.tensor(p)[None]], [torch.tensor(s)[None]], "scribble") == pytest.approx(5 / 7)
