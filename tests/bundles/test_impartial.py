"""The ImPartial bundle end to end through ``python -m monai.bundle``: train → evaluate → inference, on tiny data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.bundles.conftest import bundle_run

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "impartial"
pytestmark = pytest.mark.slow

# small and fast: few epochs, narrow network; everything else is the shipped config
FAST = ["--train#trainer#max_epochs", "2", "--val_interval", "1", "--network_def#features", "8", "--num_samples", "2"]


def run(configs: list[str], *args: str, bundle: Path = BUNDLE, launcher: list[str] | None = None):
    return bundle_run(bundle, configs, *args, launcher=launcher)


@pytest.fixture(scope="module")
def trained(disc_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("impartial")
    ckpt_dir = out / "models"
    run(
        ["train.json"],
        "--dataset_dir",
        str(disc_dataset),
        "--output_dir",
        str(out / "train"),
        "--ckpt_dir",
        str(ckpt_dir),
        *FAST,
    )
    return out, ckpt_dir / "model.pt"


def test_train_writes_best_and_resumable_checkpoints(trained):
    out, model = trained
    assert model.is_file()
    import torch

    state = torch.load(model, weights_only=True)  # a plain state dict, as MONAI 1.6 loads it
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert list((out / "train").glob("checkpoint_epoch=2.pt"))
    assert list((out / "train").glob("events.out.tfevents.*"))


def test_resume_continues_from_last_epoch(trained, disc_dataset):
    out, model = trained
    proc = run(
        ["train.json"],
        "--dataset_dir",
        str(disc_dataset),
        "--output_dir",
        str(out / "train"),
        "--ckpt_dir",
        str(out / "models"),
        *FAST[:0],
        "--train#trainer#max_epochs",
        "3",
        "--val_interval",
        "1",
        "--network_def#features",
        "8",
        "--num_samples",
        "2",
        "--resume",
        "True",
    )
    assert "resuming training from" in proc.stdout + proc.stderr
    assert list((out / "train").glob("checkpoint_epoch=3.pt"))


def test_evaluate_writes_metrics(trained, disc_dataset):
    out, model = trained
    run(
        ["train.json", "evaluate.json"],
        "--dataset_dir",
        str(disc_dataset),
        "--eval_dir",
        str(out / "eval"),
        "--ckpt_path",
        str(model),
        "--network_def#features",
        "8",
    )
    rows = dict(line.rsplit(",", 1) for line in (out / "eval" / "metrics.csv").read_text().splitlines())
    for name in ("val_f1@0.5", "val_ap_dsb@0.5", "val_mdice", "val_miou", "val_pixel_f1", "val_pixel_auc"):
        assert 0.0 <= float(rows[name]) <= 1.0, name
    per_image = (out / "eval" / "val_f1@0.5_raw.csv").read_text().splitlines()[1:]
    val_ids = json.loads((disc_dataset / "split.json").read_text())["val"]
    assert sorted(Path(row.split(",")[0]).stem for row in per_image) == sorted(val_ids)
    preds = sorted((out / "eval" / "predictions").glob("*.tif"))
    assert [p.stem for p in preds] == json.loads((disc_dataset / "split.json").read_text())["val"]


@pytest.mark.parametrize("alias", ["impartial", "imppartial"])
def test_inference_writes_label_overlay_csv(trained, disc_dataset, alias):
    out, model = trained
    pred_dir = out / f"infer_{alias}"
    # one input of a size that is not a multiple of the network's stride nor of the tile
    big = np.zeros((150, 203, 3), np.uint8)
    big[20:40, 30:50] = 200
    single = out / "odd_size.tif"
    tifffile.imwrite(single, big)
    for source in (disc_dataset / "images", single):
        run(
            ["inference.json"],
            "--dataset_dir",
            str(source),
            "--output_dir",
            str(pred_dir),
            "--ckpt_path",
            str(model),
            "--network_def#features",
            "8",
            bundle=REPO / "bundles" / alias,
        )
    for image_path in [*sorted((disc_dataset / "images").glob("*.tif")), single]:
        labels = tifffile.imread(pred_dir / f"{image_path.stem}.tif")
        assert labels.shape == tifffile.imread(image_path).shape[:2]
        assert np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0
        assert (pred_dir / f"{image_path.stem}_overlay.png").is_file()
        with open(pred_dir / f"{image_path.stem}.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(np.setdiff1d(np.unique(labels), [0]))


def test_missing_weights_give_a_clear_error(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(BUNDLE / "configs" / "inference.json"),
        "--ckpt_path",
        str(tmp_path / "none.pt"),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "train the bundle first" in proc.stderr


def test_multi_process_training_with_torchrun(disc_dataset, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    run(
        ["train.json", "multi_gpu_train.json"],
        "--dataset_dir",
        str(disc_dataset),
        "--output_dir",
        str(tmp_path / "ddp"),
        "--ckpt_dir",
        str(tmp_path / "m"),
        "--train#trainer#max_epochs",
        "1",
        "--val_interval",
        "1",
        "--network_def#features",
        "8",
        "--num_samples",
        "2",
        launcher=launcher,
    )
    assert (tmp_path / "m" / "model.pt").is_file()
    assert list((tmp_path / "ddp").glob("checkpoint_epoch=1.pt"))


def test_cli_segment_uses_the_bundle(trained, disc_dataset, tmp_path):
    out, model = trained
    cmd = [
        sys.executable,
        "-m",
        "cellseg_monai.cli",
        "segment",
        str(disc_dataset),
        "--output_dir",
        str(tmp_path / "p"),
        "--ckpt_path",
        str(model),
        "--network_def#features",
        "8",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.stem for p in (tmp_path / "p").glob("*.tif")) == sorted(
        p.stem for p in (disc_dataset / "images").glob("*.tif")
    )
