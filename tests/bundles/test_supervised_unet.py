"""The fully supervised U-Net bundle end to end through ``python -m monai.bundle``: train → evaluate → inference."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.bundles.conftest import bundle_run

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "supervised_unet"
pytestmark = pytest.mark.slow

NARROW = ["--network_def#features", "[4, 8, 8, 16, 16, 4]"]
# small and fast: few epochs, narrow network, small patches; everything else is the shipped config
FAST = ["--train#trainer#max_epochs", "2", "--val_interval", "1", "--num_samples", "2", "--patch_size", "[64, 64]"]


@pytest.fixture(scope="module")
def trained(disc_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("supervised_unet")
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
        *NARROW,
    )
    return out, ckpt_dir / "model.pt"


def test_train_writes_best_and_resumable_checkpoints(trained):
    out, model = trained
    import torch

    state = torch.load(model, weights_only=True)  # a plain state dict, as MONAI 1.6 loads it
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["final_conv.weight"].shape[0] == 3  # background / interior / boundary
    assert list((out / "train").glob("checkpoint_epoch=2.pt"))
    assert list((out / "train").glob("events.out.tfevents.*"))


def test_training_uses_full_labels_not_a_budget():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    assert "annotation_budget" not in parser  # the benchmark tells weak bundles by this id


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
        *NARROW,
    )
    rows = dict(line.rsplit(",", 1) for line in (out / "eval" / "metrics.csv").read_text().splitlines())
    for name in ("val_f1@0.5", "val_ap_dsb@0.5", "val_mdice", "val_miou", "val_pixel_f1", "val_pixel_auc"):
        assert 0.0 <= float(rows[name]) <= 1.0, name
    val_ids = json.loads((disc_dataset / "split.json").read_text())["val"]
    per_image = (out / "eval" / "val_f1@0.5_raw.csv").read_text().splitlines()[1:]
    assert sorted(Path(row.split(",")[0]).stem for row in per_image) == sorted(val_ids)
    preds = sorted((out / "eval" / "predictions").glob("*.tif"))
    assert [p.stem for p in preds] == val_ids


def test_inference_writes_label_overlay_csv(trained, disc_dataset):
    out, model = trained
    pred_dir = out / "infer"
    # one input of a size that is not a multiple of the network's stride (16) nor of the tile
    odd = np.zeros((75, 101, 3), np.uint8)
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
            "--patch_size",
            "[64, 64]",
            *NARROW,
        )
    for image_path in [*sorted((disc_dataset / "images").glob("*.tif")), single]:
        labels = tifffile.imread(pred_dir / f"{image_path.stem}.tif")
        assert labels.shape == tifffile.imread(image_path).shape[:2]
        assert np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0
        assert (pred_dir / f"{image_path.stem}_overlay.png").is_file()
        with open(pred_dir / f"{image_path.stem}.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(np.setdiff1d(np.unique(labels), [0]))
