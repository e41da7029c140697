"""The partially-labelled-exemplar Mask R-CNN bundle end to end through ``python -m monai.bundle``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.bundles.conftest import bundle_run

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "partial_maskrcnn"
pytestmark = pytest.mark.slow

# tiny network: every id below is a plain config id of train.json / inference.json
TINY = [
    "--backbone_channels", "[8, 8, 16, 16]",
    "--fpn_channels", "16",
    "--representation_size", "32",
    "--network_def#detections_per_image", "30",
]  # fmt: skip
FAST = ["--train#trainer#max_epochs", "2", "--val_interval", "2", "--num_samples", "2", "--patch_size", "[64, 64]"]


@pytest.fixture(scope="module")
def trained(disc_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("partial_maskrcnn")
    ckpt_dir = out / "models"
    proc = bundle_run(
        BUNDLE,
        ["train.json"],
        "--dataset_dir", str(disc_dataset),
        "--output_dir", str(out / "train"),
        "--ckpt_dir", str(ckpt_dir),
        "--warmup_epochs", "1",
        *FAST,
        *TINY,
    )  # fmt: skip
    return out, ckpt_dir / "model.pt", proc.stdout + proc.stderr


def test_train_writes_checkpoints_and_warms_up(trained):
    out, model, log = trained
    import torch

    state = torch.load(model, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["box_cls.weight"].shape[0] == 2  # background / nucleus
    assert "centerness.anchor_size" in state and "attention.0.query.weight" in state
    assert list((out / "train").glob("checkpoint_epoch=2.pt"))
    assert list((out / "train").glob("events.out.tfevents.*"))
    assert "centerness warm-up" in log and "end of warm-up" in log


def test_config_ids_for_the_ablations():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    assert parser["annotation_budget"] == 0.25  # benchmarks/run.py tells weak bundles by this id
    assert parser["use_attention"] is True and parser["use_centerness"] is True and parser["warmup_epochs"] == 0
    net = parser.get_parsed_content("network_def", instantiate=True)
    assert net.centerness is not None and len(net.attention) == 3
    parser["use_centerness"] = False
    parser["use_attention"] = False
    parser.parse(True)
    net = parser.get_parsed_content("network_def", instantiate=True)
    assert net.centerness is None and len(net.attention) == 0


def test_evaluate_writes_metrics(trained, disc_dataset):
    out, model, _ = trained
    bundle_run(
        BUNDLE,
        ["train.json", "evaluate.json"],
        "--dataset_dir", str(disc_dataset),
        "--eval_dir", str(out / "eval"),
        "--ckpt_path", str(model),
        *TINY,
    )  # fmt: skip
    rows = dict(line.rsplit(",", 1) for line in (out / "eval" / "metrics.csv").read_text().splitlines())
    for name in ("val_ap_dsb_mean", "val_ap_dsb@0.5", "val_recall@0.5", "val_ncs", "val_aji", "val_f1@0.5"):
        assert 0.0 <= float(rows[name]) <= 1.0, name
    val_ids = json.loads((disc_dataset / "split.json").read_text())["val"]
    preds = sorted((out / "eval" / "predictions").glob("*.tif"))
    assert [p.stem for p in preds] == val_ids


def test_inference_writes_label_overlay_csv(trained, disc_dataset):
    out, model, _ = trained
    pred_dir = out / "infer"
    folder = out / "infer_images"  # the val images plus one whose size is not a multiple of the stride (16)
    folder.mkdir()
    for p in sorted((disc_dataset / "images").glob("*.tif")):
        (folder / p.name).write_bytes(p.read_bytes())
    odd = np.zeros((75, 101, 3), np.uint8)
    odd[20:40, 30:50] = 200
    tifffile.imwrite(folder / "odd_size.tif", odd)
    bundle_run(
        BUNDLE,
        ["inference.json"],
        "--dataset_dir", str(folder),
        "--output_dir", str(pred_dir),
        "--ckpt_path", str(model),
        *TINY,
    )  # fmt: skip
    for image_path in sorted(folder.glob("*.tif")):
        labels = tifffile.imread(pred_dir / f"{image_path.stem}.tif")
        assert labels.shape == tifffile.imread(image_path).shape[:2]
        assert np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0
        assert (pred_dir / f"{image_path.stem}_overlay.png").is_file()
        with open(pred_dir / f"{image_path.stem}.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(np.setdiff1d(np.unique(labels), [0]))
        assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
