"""The ImPartial bundle: what only it does, and what is tested on one bundle for all — multi-process training with
torchrun, the ``cellseg-monai segment`` command, the message for missing weights (the shared train → evaluate →
infer flow is in test_bundles.py; these tests read the same runs)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
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
