"""The SE-U-Net / SparseSEU-Net bundle end to end through ``python -m monai.bundle``: train → evaluate → inference.

One training run serves both instance decoders: evaluation uses the sparse branch, inference the watershed on the
semantic heads.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.bundles.conftest import bundle_run

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "sparse_seunet"
pytestmark = pytest.mark.slow

TINY = ["--features", "[4, 8, 16]", "--num_instances", "8", "--se_reduction", "2"]
FAST = ["--train#trainer#max_epochs", "2", "--val_interval", "2", "--num_samples", "2", "--patch_size", "[64, 64]"]


@pytest.fixture(scope="module")
def trained(disc_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("sparse_seunet")
    ckpt_dir = out / "models"
    bundle_run(
        BUNDLE,
        ["train.json"],
        "--dataset_dir", str(disc_dataset),
        "--output_dir", str(out / "train"),
        "--ckpt_dir", str(ckpt_dir),
        "--max_train_images", "2",
        "--copy_paste_prob", "1.0",
        *FAST,
        *TINY,
    )  # fmt: skip
    return out, ckpt_dir / "model.pt"


def test_train_writes_best_and_resumable_checkpoints(trained):
    out, model = trained
    import torch

    state = torch.load(model, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["branches.0.iam.weight"].shape[0] == 8  # N instance activation maps
    assert len([k for k in state if k.startswith("seunet.head_layers.") and k.endswith(".2.weight")]) == 4
    assert list((out / "train").glob("checkpoint_epoch=2.pt"))
    assert list((out / "train").glob("events.out.tfevents.*"))


def test_max_train_images_takes_the_first_ids():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["max_train_images"] = 2
    first_two = parser.get_parsed_content("train#datalist")
    parser["max_train_images"] = 0
    everything = parser.get_parsed_content("train#datalist", lazy=False)
    assert [d["id"] for d in first_two] == [d["id"] for d in everything[:2]] and len(everything) > 2
    assert "annotation_budget" not in parser  # full masks: not a weak bundle for benchmarks/run.py


def test_evaluate_writes_metrics(trained, disc_dataset):
    out, model = trained
    eval_dir = out / "eval"
    bundle_run(
        BUNDLE,
        ["train.json", "evaluate.json"],
        "--dataset_dir", str(disc_dataset),
        "--eval_dir", str(eval_dir),
        "--ckpt_path", str(model),
        "--instance_decoder", "sparse",
        *TINY,
    )  # fmt: skip
    rows = dict(line.rsplit(",", 1) for line in (eval_dir / "metrics.csv").read_text().splitlines())
    for name in ("val_f1@0.5", "val_coco_ap", "val_ap_dsb@0.5", "val_mdice", "val_pixel_f1"):
        assert 0.0 <= float(rows[name]) <= 1.0, name
    preds = sorted((eval_dir / "predictions").glob("*.tif"))
    assert [p.stem for p in preds] == ["img3", "img4"]
    for p in preds:
        assert tifffile.imread(p).shape == (96, 80)


def test_inference_writes_label_overlay_csv(trained, disc_dataset):
    """Inference with the watershed decoder: the same checkpoint as the sparse evaluation above."""
    out, model = trained
    pred_dir = out / "infer"
    odd = np.zeros((75, 101, 3), np.uint8)  # not a multiple of the network stride
    odd[20:40, 30:50] = 200
    single = out / "odd_size.tif"
    tifffile.imwrite(single, odd)
    bundle_run(
        BUNDLE,
        ["inference.json"],
        "--dataset_dir", str(single),
        "--output_dir", str(pred_dir),
        "--ckpt_path", str(model),
        "--instance_decoder", "watershed",
        *TINY,
    )  # fmt: skip
    labels = tifffile.imread(pred_dir / "odd_size.tif")
    assert labels.shape == (75, 101) and np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0
    assert (pred_dir / "odd_size_overlay.png").is_file()
    with open(pred_dir / "odd_size.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(np.setdiff1d(np.unique(labels), [0]))


def test_inference_on_an_image_larger_than_a_tile_stitches_sparse_instances(trained, tmp_path):
    """The sparse branch reads coordinate channels of its input: the bundle predicts tile by tile at the training
    patch size (``TiledInstanceInferer``) and stitches the instances into one label image of the input's size."""
    _, model = trained
    rng = np.random.default_rng(0)
    big = (rng.random((150, 170, 3)) * 30).astype(np.uint8)
    for y, x in [(20, 20), (70, 120), (120, 40), (130, 150)]:
        big[y - 8 : y + 8, x - 8 : x + 8] = 220
    single = tmp_path / "big.tif"
    tifffile.imwrite(single, big)
    bundle_run(
        BUNDLE,
        ["inference.json"],
        "--dataset_dir", str(single),
        "--output_dir", str(tmp_path / "infer"),
        "--ckpt_path", str(model),
        "--instance_decoder", "sparse",
        "--score_threshold", "0.0",
        "--patch_size", "[64, 64]",
        *TINY,
    )  # fmt: skip
    labels = tifffile.imread(tmp_path / "infer" / "big.tif")
    assert labels.shape == (150, 170) and labels.min() >= 0
    ids = np.setdiff1d(np.unique(labels), [0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # stitched labels renumbered 1..K


@pytest.mark.parametrize("configs", [["train.json"], ["inference.json"]])
def test_the_inferer_tiles_at_the_training_patch_size(configs):
    from monai.bundle import ConfigParser

    from cellseg_monai.inferers import TiledInstanceInferer

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / c) for c in configs])
    parser["patch_size"] = [96, 80]
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, TiledInstanceInferer)
    assert inferer.roi_size == (96, 80) and inferer.num_pixel_channels == len(parser["heads"])
