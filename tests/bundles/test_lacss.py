"""The LACSS bundle end to end through ``python -m monai.bundle``: train (weak and full) → evaluate → inference."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.bundles.conftest import bundle_run

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "lacss"
pytestmark = pytest.mark.slow

TINY = ["--network_def#features", "[8, 16, 32]", "--network_def#feature_channels", "8", "--crop_size", "32"]
FAST = ["--train#trainer#max_epochs", "2", "--val_interval", "1", "--num_samples", "2", "--patch_size", "[64, 64]"]


@pytest.fixture(scope="module")
def trained(disc_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("lacss")
    ckpt_dir = out / "models"
    bundle_run(
        BUNDLE,
        ["train.json"],
        "--dataset_dir",
        str(disc_dataset),
        "--output_dir",
        str(out / "train"),
        "--ckpt_dir",
        str(ckpt_dir),
        *FAST,
        *TINY,
    )
    return out, ckpt_dir / "model.pt"


def test_train_writes_best_and_resumable_checkpoints(trained):
    out, model = trained
    import torch

    state = torch.load(model, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert any(k.startswith("lpn.") for k in state) and any(k.startswith("segmentor.") for k in state)
    assert list((out / "train").glob("checkpoint_epoch=2.pt"))
    assert list((out / "train").glob("events.out.tfevents.*"))


def test_weak_by_default_full_by_override():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    assert parser["supervised"] is False and parser["points_source"] == "simulate"
    assert "annotation_budget" not in parser  # every cell gets a point: no budget
    parser.read_config([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "full.json")])
    assert parser["supervised"] is True


def test_full_supervision_with_detected_points_trains(disc_dataset, tmp_path):
    bundle_run(
        BUNDLE,
        ["train.json", "full.json"],
        "--dataset_dir",
        str(disc_dataset),
        "--output_dir",
        str(tmp_path / "train"),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--points_source",
        "detect",
        "--train#trainer#max_epochs",
        "1",
        *FAST[2:],
        *TINY,
    )
    assert (tmp_path / "models" / "model.pt").is_file()


def test_evaluate_writes_metrics(trained, disc_dataset):
    out, model = trained
    bundle_run(
        BUNDLE,
        ["train.json", "evaluate.json"],
        "--dataset_dir",
        str(disc_dataset),
        "--eval_dir",
        str(out / "eval"),
        "--ckpt_path",
        str(model),
        *TINY,
    )
    rows = dict(line.rsplit(",", 1) for line in (out / "eval" / "metrics.csv").read_text().splitlines())
    for name in ("val_ap@0.5", "val_ap@0.75", "val_mAP", "val_fnr@0.5", "val_fnr_mean", "val_f1@0.5"):
        assert 0.0 <= float(rows[name]) <= 1.0, name
    val_ids = json.loads((disc_dataset / "split.json").read_text())["val"]
    preds = sorted((out / "eval" / "predictions").glob("*.tif"))
    assert [p.stem for p in preds] == val_ids
    assert all((out / "eval" / "predictions" / f"{i}.csv").is_file() for i in val_ids)  # scores for ranked AP


def test_inference_writes_label_overlay_csv(trained, disc_dataset):
    out, model = trained
    pred_dir = out / "infer"
    odd = np.zeros((75, 101, 3), np.uint8)  # not a multiple of the network's size divisor
    odd[20:40, 30:50] = 200
    single = out / "odd_size.tif"
    tifffile.imwrite(single, odd)
    for source in (disc_dataset / "images", single):
        bundle_run(
            BUNDLE,
            ["inference.json"],
            "--dataset_dir",
            str(source),
            "--output_dir",
            str(pred_dir),
            "--ckpt_path",
            str(model),
            *TINY,
        )
    for image_path in [*sorted((disc_dataset / "images").glob("*.tif")), single]:
        labels = tifffile.imread(pred_dir / f"{image_path.stem}.tif")
        assert labels.shape == tifffile.imread(image_path).shape[:2]
        assert np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0
        assert (pred_dir / f"{image_path.stem}_overlay.png").is_file()
        with open(pred_dir / f"{image_path.stem}.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(np.setdiff1d(np.unique(labels), [0]))
        assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
