"""The ImPartial bundle: what only it does, and what is tested on one bundle for all — multi-process training with
torchrun, the ``cellseg-monai segment`` command, the message for missing weights (the shared train → evaluate →
infer flow is in test_bundles.py; these tests read the same runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser

from tests.bundles.conftest import REPO, SPECS, bundle_run

BUNDLE = REPO / "bundles" / "impartial"
pytestmark = pytest.mark.slow


def test_the_imppartial_alias_is_the_same_bundle():
    configs = {}
    for alias in ("impartial", "imppartial"):
        parser = ConfigParser()
        parser.read_config(str(REPO / "bundles" / alias / "configs" / "inference.json"))
        configs[alias] = (parser.get(), parser.get_parsed_content("bundle_root"))
    assert configs["impartial"] == configs["imppartial"]


def test_missing_weights_give_a_clear_error(tmp_path):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json")]
    cmd += ["--ckpt_path", str(tmp_path / "none.pt"), "--output_dir", str(tmp_path / "o")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CELLSEG_DEBUG", None)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1
    assert "train the bundle first" in proc.stderr and "Traceback" not in proc.stderr


def test_trains_and_validates_on_scribbles_alone(disc_dataset, tmp_path):
    """The paper's setting: the user scribbled a few nuclei and some background, and outlined nothing. Training
    and validation read weak/scribbles/ only; the key metric is the scribble F1, label metrics are NaN."""
    data = tmp_path / "scribbled"
    shutil.copytree(disc_dataset / "images", data / "images")
    shutil.copy(disc_dataset / "split.json", data / "split.json")
    (data / "weak" / "scribbles").mkdir(parents=True)
    for path in sorted((disc_dataset / "labels").glob("*.tif")):
        labels = tifffile.imread(path)
        scribbles = np.zeros(labels.shape, np.uint8)
        scribbles[:2, :] = np.where(labels[:2, :] == 0, 1, 0)  # a background stroke along the top edge
        for k in (1, 2, 3):  # a short stroke inside three nuclei
            ys, xs = np.nonzero(labels == k)
            scribbles[ys[len(ys) // 2], xs.min() + 2 : xs.max() - 1] = 2
        tifffile.imwrite(data / "weak" / "scribbles" / path.name, scribbles)
    proc = bundle_run(
        BUNDLE,
        ["train.json"],
        *["--dataset_dir", str(data), "--output_dir", str(tmp_path / "run"), "--ckpt_dir", str(tmp_path / "m")],
        *["--train#trainer#max_epochs", "1", "--val_interval", "1", "--num_samples", "2"],
        *SPECS["impartial"].small,
    )
    assert (tmp_path / "m" / "model.pt").is_file()
    out = proc.stdout + proc.stderr
    assert "val_scribble_f1" in out and "val_f1@0.5: nan" in out, out[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert not (data / "labels").exists() and run


def test_multi_process_training_with_torchrun(disc_dataset, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    bundle_run(
        BUNDLE,
        ["train.json", "multi_gpu_train.json"],
        *["--dataset_dir", str(disc_dataset), "--output_dir", str(tmp_path / "ddp"), "--ckpt_dir", str(tmp_path / "m")],
        *["--train#trainer#max_epochs", "1", "--val_interval", "1", "--num_samples", "2"],
        *SPECS["impartial"].small,
        launcher=launcher,
    )
    assert (tmp_path / "m" / "model.pt").is_file()
    assert list((tmp_path / "ddp").glob("checkpoint_epoch=1.pt"))


def test_cli_segment_uses_the_bundle(flows, disc_dataset, tmp_path):
    model = flows["impartial"].trained().model
    cmd = [sys.executable, "-m", "cellseg_monai.cli", "segment", str(disc_dataset), "--output_dir", str(tmp_path / "p")]
    proc = subprocess.run(
        [*cmd, "--ckpt_path", str(model), *SPECS["impartial"].small], capture_output=True, text=True, timeout=600,
        cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.stem for p in (tmp_path / "p").glob("*.tif")) == sorted(
        p.stem for p in (disc_dataset / "images").glob("*.tif")
    )


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
@pytest.mark.parametrize("depth", [3, 4])
def test_the_inferer_pads_to_the_network_stride_at_any_depth(config, depth):
    """The paper's depth-4 network is one override away: tiles and padding follow ``network_def#depth`` (an image
    whose sides are no multiple of 2**depth comes back at its own size)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / config))
    parser.update(
        {"network_def#depth": depth, "network_def#features": 4, "device": "cpu", "inference_precision": "float32"}
    )
    network = parser.get_parsed_content("network").eval()
    inferer = parser.get_parsed_content("inferer")
    image = torch.rand(1, parser["in_channels"], 264, 350)  # 264 = 16 · 16.5: no multiple of 16; 350 not of 8
    with torch.no_grad():
        out = inferer(image, network)
    assert out.shape[-2:] == image.shape[-2:]
    assert torch.isfinite(out).all()
