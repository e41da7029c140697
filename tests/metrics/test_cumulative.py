from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cellseg_monai.metrics.cumulative import InstanceMetric, PixelMetric, instance_scores_from_map
from tests.metrics.test_matching import strips


def batch(arrs: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(a) for a in arrs])[:, None]  # (B, 1, H, W)


# image 1: perfect single object; image 2: split into halves (tp 1, fp 1 at 0.5); image 3: nothing predicted
PAIRS = [
    strips([(0, 5)], [(0, 5)]),
    strips([(0, 20)], [(0, 10), (10, 20)]),
    strips([(0, 4)], []),
]


@pytest.mark.parametrize(
    "name, per_image",
    [
        ("f1@0.5", [1.0, 2 / 3, 0.0]),
        ("ap_dsb@0.5", [1.0, 1 / 2, 0.0]),
        ("miou", [1.0, 0.5, 0.0]),
        ("aji", [1.0, 10 / (20 + 10), 0.0]),  # the unused half adds its 10 pixels to U
    ],
)
def test_instance_metric(name: str, per_image: list[float]) -> None:
    gt = batch([g for g, _ in PAIRS])
    pred = batch([p for _, p in PAIRS])
    metric = InstanceMetric(name=name)
    out = metric(y_pred=pred[:2], y=gt[:2])
    assert out.shape == (2, 1)
    metric(y_pred=[pred[2]], y=[MetaTensor(gt[2].float())])  # decollated list, MetaTensor, float labels
    assert metric.get_buffer().flatten().tolist() == pytest.approx(per_image, abs=1e-6)
    assert metric.aggregate().item() == pytest.approx(np.mean(per_image))
    assert metric.aggregate("sum").item() == pytest.approx(np.sum(per_image))
    metric.reset()
    with pytest.raises(ValueError, match="nothing to aggregate"):
        metric.aggregate()


def test_pixel_metric_nan_skipped() -> None:
    prob = torch.tensor([[0.1, 0.4, 0.35, 0.8]]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    gt = torch.tensor([[0, 0, 1, 1]]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    gt[1] = 0  # second image has no foreground: AUC undefined (NaN), skipped by the mean
    m = PixelMetric(name="auc", get_not_nans=True)
    vals = m(prob, gt)
    assert vals[0].item() == pytest.approx(0.75) and torch.isnan(vals[1]).all()
    f, not_nans = m.aggregate()
    assert f.item() == pytest.approx(0.75) and not_nans.item() == 1
    m = PixelMetric(name="iou", threshold=0.3)  # fg [0, 1, 1, 1] vs [0, 0, 1, 1] -> 2 / 3; empty gt -> 0
    m(prob, gt)
    assert m.aggregate().item() == pytest.approx((2 / 3 + 0.0) / 2)


@pytest.mark.parametrize(
    "kwargs, y_pred, y, err",
    [
        ({"name": "f1@0.5"}, torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), ValueError),
        ({"name": "f1@0.5"}, torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), ValueError),
        ({"name": "f1@0.5"}, torch.zeros(1, 1, 4, 4), None, ValueError),
    ],
)
def test_bad_batches(kwargs: dict, y_pred: torch.Tensor, y: torch.Tensor | None, err: type) -> None:
    with pytest.raises(err):
        InstanceMetric(**kwargs)(y_pred, y)


def test_bad_names() -> None:
    with pytest.raises(ValueError, match="unknown"):
        InstanceMetric("dice@x")
    with pytest.raises(ValueError, match="unknown"):
        PixelMetric("ap")
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):  # a score-ranked metric needs the score channel
        InstanceMetric("mAP")(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


def _two_predictions(score_tp: float, score_fp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One GT square; prediction 1 = the same square (a TP at any IoU), prediction 2 = a false positive."""
    gt = torch.zeros(1, 1, 12, 12)
    gt[..., 1:5, 1:5] = 1
    pred = torch.zeros(1, 2, 12, 12)
    pred[:, 0, 1:5, 1:5] = 1
    pred[:, 0, 7:11, 7:11] = 2
    pred[:, 1, 1:5, 1:5] = score_tp
    pred[:, 1, 7:11, 7:11] = score_fp
    return pred, gt


@pytest.mark.parametrize(
    "score_tp, score_fp, expected",
    [
        # ranked TP first: precision 1/1 at the only TP -> AP = 1 / #GT = 1
        (0.9, 0.4, 1.0),
        # ranked FP first: the TP comes second with precision 1/2 -> AP = 0.5
        (0.4, 0.9, 0.5),
    ],
)
def test_score_ranked_ap_uses_the_score_channel(score_tp, score_fp, expected) -> None:
    pred, gt = _two_predictions(score_tp, score_fp)
    metric = InstanceMetric("ap@0.5")
    metric(pred, gt)
    assert float(metric.aggregate()) == pytest.approx(expected)


def test_instance_scores_from_map_is_the_mean_inside_each_instance() -> None:
    labels = torch.tensor([[0, 1, 1], [0, 3, 3], [0, 0, 3]])
    score = torch.tensor([[9.0, 0.2, 0.4], [9.0, 1.0, 0.0], [9.0, 9.0, 0.5]])
    got = instance_scores_from_map(labels, score)
    assert got.tolist() == pytest.approx([9.0, 0.3, 0.0, 0.5])
