from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.handlers import from_engine

from cellseg_monai.handlers.metrics import InstanceMetricHandler, PixelMetricHandler


def strip_labels(spans: list[tuple[int, int]], n: int = 24) -> torch.Tensor:
    out = torch.zeros(1, 1, n, dtype=torch.int64)  # (1, H, W) channel-first, H = 1
    for k, (a, b) in enumerate(spans):
        out[0, 0, a:b] = 7 * k + 2
    return out


# two iterations of two decollated items each: (pred, label, prob)
ITEMS = [
    [
        {"pred": strip_labels([(0, 5)]), "label": strip_labels([(0, 5)])},  # f1 1
        {"pred": strip_labels([(0, 10), (10, 20)]), "label": strip_labels([(0, 20)])},  # tp 1 fp 1: f1 2/3
    ],
    [
        {"pred": strip_labels([]), "label": strip_labels([(0, 4)])},  # f1 0
        {"pred": strip_labels([(3, 9)]), "label": strip_labels([(3, 9)])},  # f1 1
    ],
]


def run_engine(handler_name: str, handler) -> Engine:
    def step(engine: Engine, batch: list[dict]) -> list[dict]:
        out = []
        for item in batch:  # like SupervisedEvaluator after decollate_batch: a list of per-item dicts
            prob = (item["pred"] > 0).float() * 0.8 + 0.1
            out.append({"pred": MetaTensor(item["pred"]), "label": item["label"], "prob": prob})
        return out

    engine = Engine(step)
    handler.attach(engine, name=handler_name)
    engine.run(ITEMS, max_epochs=1)
    return engine


def test_instance_metric_handler() -> None:
    handler = InstanceMetricHandler(name="f1@0.5", output_transform=from_engine(["pred", "label"]))
    engine = run_engine("val_f1", handler)
    expected = [1.0, 2 / 3, 0.0, 1.0]
    assert engine.state.metrics["val_f1"] == pytest.approx(np.mean(expected))
    assert np.asarray(engine.state.metric_details["val_f1"]).ravel().tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    "name, expected",
    [
        # prob is 0.9 exactly on the predicted objects, 0.1 elsewhere
        ("dice", [1.0, 1.0, 0.0, 1.0]),  # image 3 predicts nothing of a 4-pixel object
        ("auc", [1.0, 1.0, 0.5, 1.0]),
    ],
)
def test_pixel_metric_handler(name: str, expected: list[float]) -> None:
    handler = PixelMetricHandler(name=name, threshold=0.5, output_transform=from_engine(["prob", "label"]))
    engine = run_engine(name, handler)
    assert engine.state.metrics[name] == pytest.approx(np.mean(expected))


def test_in_supervised_evaluator() -> None:
    """The handlers as key / additional metrics of a real monai SupervisedEvaluator (decollated outputs)."""
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator

    class Echo(torch.nn.Module):  # "segments" perfectly except in item 1, where the image is a split object
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    data = [
        {"image": strip_labels([(0, 5)]).float(), "label": strip_labels([(0, 5)])},
        {"image": strip_labels([(0, 10), (10, 20)]).float(), "label": strip_labels([(0, 20)])},
    ]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=2),
        network=Echo(),
        key_val_metric={
            "val_f1": InstanceMetricHandler(name="f1@0.5", output_transform=from_engine(["pred", "label"]))
        },
        additional_metrics={
            "val_aji": InstanceMetricHandler(name="aji", output_transform=from_engine(["pred", "label"])),
            "val_dice": PixelMetricHandler(  # foreground "probability" = predicted labels > 0
                name="dice",
                threshold=0.5,
                output_transform=lambda out: ([(o["pred"] > 0).float() for o in out], [o["label"] for o in out]),
            ),
        },
    )
    evaluator.run()
    assert evaluator.state.metrics["val_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert evaluator.state.metrics["val_aji"] == pytest.approx((1.0 + 10 / 30) / 2)
    assert evaluator.state.metrics["val_dice"] == pytest.approx(1.0)


def _run_items(handler, items) -> Engine:
    engine = Engine(lambda e, batch: [dict(item) for item in batch])
    handler.attach(engine, name="m")
    engine.run(items, max_epochs=1)
    return engine


def test_images_without_labels_are_skipped() -> None:
    """A validation set a user only scribbled: images without ``label`` do not count (the others do, as before)."""
    unlabelled = {"pred": strip_labels([(0, 5)])}
    items = [[ITEMS[0][0], unlabelled], [unlabelled], [ITEMS[0][1]]]
    engine = _run_items(InstanceMetricHandler(name="f1@0.5", output_transform=from_engine(["pred", "label"])), items)
    assert engine.state.metrics["m"] == pytest.approx(np.mean([1.0, 2 / 3]))


def test_no_labelled_image_gives_nan() -> None:
    items = [[{"pred": strip_labels([(0, 5)]), "label": None}], [{"pred": strip_labels([])}]]
    engine = _run_items(PixelMetricHandler(name="f1", output_transform=from_engine(["pred", "label"])), items)
    assert np.isnan(engine.state.metrics["m"]) and "m" not in engine.state.metric_details
