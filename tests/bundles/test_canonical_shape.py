"""The canonical-shape bundle end to end through ``python -m monai.bundle``: train → evaluate → inference."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from cellseg_monai.inferers import AFFINE_ATTRIBUTES
from tests.bundles.conftest import bundle_run

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "canonical_shape"
pytestmark = pytest.mark.slow

SMALL = ["--features", "8"]
FAST = ["--train#trainer#max_epochs", "2", "--val_interval", "1", "--num_samples", "2", "--patch_size", "[64, 64]"]


@pytest.fixture(scope="module")
def trained(disc_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("canonical_shape")
    ckpt_dir = out / "models"
    args = ["--dataset_dir", str(disc_dataset), "--output_dir", str(out / "train"), "--ckpt_dir", str(ckpt_dir)]
    bundle_run(BUNDLE, ["train.json"], *args, *FAST, *SMALL)
    return out, ckpt_dir / "model.pt"


def test_train_writes_checkpoints_and_the_one_cycle_schedule_resumes(trained, disc_dataset):
    out, model = trained
    import torch

    state = torch.load(model, weights_only=True)
    assert state["affine_head.weight"].shape[0] == 5 * 2  # (l11, l21, l22, tx, ty) × 2 instances per cell
    ckpt = torch.load(next((out / "train").glob("checkpoint_epoch=2.pt")), weights_only=True)
    assert ckpt["lr_scheduler"]["_step_count"] > 1  # the One-Cycle schedule is part of the resumable state
    bundle_run(  # resume for 1 more epoch: the schedule's total steps grow with max_epochs, no error
        BUNDLE,
        ["train.json"],
        *["--dataset_dir", str(disc_dataset), "--output_dir", str(out / "train"), "--ckpt_dir", str(out / "models")],
        *FAST[:1],
        "3",
        *FAST[2:],
        *SMALL,
        "--resume",
        "true",
    )
    assert list((out / "train").glob("checkpoint_epoch=3.pt"))


def test_training_uses_mask_and_count_only():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    assert parser["train"]["prepare_batch"]["target_keys"] == ["mask", "count"]
    deleted = [t for t in parser["train"]["random_transforms"] if t["_target_"] == "DeleteItemsd"]
    assert deleted and deleted[0]["keys"] == "label"  # the full labels never reach the loss
    assert "annotation_budget" not in parser  # mask + count cover every nucleus: no budget


@pytest.mark.parametrize("merge", ["true", "false"])
def test_evaluate_writes_metrics_and_predictions(trained, disc_dataset, merge):
    out, model = trained
    ev = out / f"eval_{merge}"
    bundle_run(
        BUNDLE,
        ["train.json", "evaluate.json"],
        *["--dataset_dir", str(disc_dataset), "--eval_dir", str(ev), "--ckpt_path", str(model)],
        *["--patch_size", "[64, 64]", "--merge", merge],
        *SMALL,
    )
    rows = dict(line.rsplit(",", 1) for line in (ev / "metrics.csv").read_text().splitlines())
    for name in ("val_f1@0.5", "val_f1_mean", "val_pixel_iou", "val_pixel_dice"):
        assert 0.0 <= float(rows[name]) <= 1.0, name
    val_ids = json.loads((disc_dataset / "split.json").read_text())["val"]
    assert sorted(p.stem for p in (ev / "predictions").glob("*.tif")) == sorted(val_ids)
    assert (ev / "canonical_shape.png").is_file()


def test_inference_any_size_with_explanations(trained, disc_dataset):
    out, model = trained
    pred_dir = out / "infer"
    big = np.zeros((150, 333, 3), np.uint8)  # several tiles wide, not a multiple of the tile or the stride
    big[20:40, 30:50] = 200
    big[100:130, 250:290] = 220
    single = out / "big.tif"
    tifffile.imwrite(single, big)
    for source in (disc_dataset / "images", single):
        bundle_run(
            BUNDLE,
            ["inference.json"],
            *["--dataset_dir", str(source), "--output_dir", str(pred_dir), "--ckpt_path", str(model)],
            *["--patch_size", "[64, 64]"],
            *SMALL,
        )
    for image_path in [*sorted((disc_dataset / "images").glob("*.tif")), single]:
        labels = tifffile.imread(pred_dir / f"{image_path.stem}.tif")
        assert labels.shape == tifffile.imread(image_path).shape[:2]
        assert np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0
        assert (pred_dir / f"{image_path.stem}_overlay.png").is_file()
        with open(pred_dir / f"{image_path.stem}.csv") as f:
            reader = csv.DictReader(f)
            table = list(reader)
        assert set(AFFINE_ATTRIBUTES) <= set(reader.fieldnames)
        assert len(table) == len(np.setdiff1d(np.unique(labels), [0]))
        h, w = labels.shape
        for row in table:  # an instance's affine centre lies in the image, its presence and axes are sane
            assert 0.0 <= float(row["presence"]) <= 1.0 and float(row["axis_major"]) >= float(row["axis_minor"]) > 0
            assert -16 <= float(row["x"]) <= w + 16 and -16 <= float(row["y"]) <= h + 16
    shape = iio.imread(pred_dir / "canonical_shape.png")
    assert shape.shape == (128, 128) and shape.dtype == np.uint8
    np.testing.assert_allclose(np.load(pred_dir / "canonical_shape.npy") * 255, shape, atol=0.51)
