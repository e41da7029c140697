"""The canonical-shape bundle: what only it does — mask + count supervision, the One-Cycle schedule that resumes,
the merge switch, the affine parameters and the canonical shape it explains its instances with (the shared train →
evaluate → infer flow is in test_bundles.py; these tests read the same runs)."""

from __future__ import annotations

import csv
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from cellseg_monai.inferers import AFFINE_ATTRIBUTES
from tests.bundles.conftest import REPO, bundle_run

BUNDLE = REPO / "bundles" / "canonical_shape"


def _check_canonical_shape(folder):
    shape = iio.imread(folder / "canonical_shape.png")
    assert shape.shape == (128, 128) and shape.dtype == np.uint8
    np.testing.assert_allclose(np.load(folder / "canonical_shape.npy") * 255, shape, atol=0.51)


@pytest.mark.slow
def test_the_one_cycle_schedule_is_part_of_the_checkpoint_and_resumes(flows, tmp_path):
    flow = flows["canonical_shape"].trained()
    state = torch.load(flow.model, weights_only=True)
    assert state["affine_head.weight"].shape[0] == 5 * 2  # (l11, l21, l22, tx, ty) × 2 instances per cell
    ckpt = torch.load(next((flow.root / "train").glob("checkpoint_epoch=2.pt")), weights_only=True)
    assert ckpt["lr_scheduler"]["_step_count"] > 1  # the One-Cycle schedule is part of the resumable state
    shutil.copytree(flow.root / "train", tmp_path / "train")  # the shared run stays as it is
    bundle_run(  # resume for 1 more epoch: the schedule's total steps grow with max_epochs, no error
        BUNDLE,
        ["train.json"],
        *["--dataset_dir", str(flow.dataset), "--output_dir", str(tmp_path / "train")],
        *["--ckpt_dir", str(tmp_path / "models"), "--train#trainer#max_epochs", "3", "--resume", "true"],
        *flow.spec.train[2:],
        *flow.spec.small,
    )
    assert list((tmp_path / "train").glob("checkpoint_epoch=3.pt"))


def test_training_uses_mask_and_count_only():
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    assert parser["train"]["prepare_batch"]["target_keys"] == ["mask", "count"]
    deleted = [t for t in parser["train"]["random_transforms"] if t["_target_"] == "DeleteItemsd"]
    assert deleted and deleted[0]["keys"] == "label"  # the full labels never reach the loss
    assert "annotation_budget" not in parser  # mask + count cover every nucleus: no budget


@pytest.mark.slow
def test_evaluation_writes_the_canonical_shape_with_and_without_merging(flows, tmp_path):
    flow = flows["canonical_shape"]
    _check_canonical_shape(flow.evaluated())  # merge: true, the shipped default
    args = ["--dataset_dir", str(flow.dataset), "--eval_dir", str(tmp_path), "--ckpt_path", str(flow.model)]
    flow.run(["train.json", "evaluate.json"], *args, "--merge", "false")
    rows = dict(line.rsplit(",", 1) for line in (tmp_path / "metrics.csv").read_text().splitlines())
    assert all(0.0 <= float(rows[name]) <= 1.0 for name in flow.spec.metrics)
    _check_canonical_shape(tmp_path)


@pytest.mark.slow
def test_inference_explains_each_instance_by_its_affine_parameters(flows):
    flow = flows["canonical_shape"]
    out = flow.inferred()
    for table in sorted(out.glob("*.csv")):
        with open(table) as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        assert set(AFFINE_ATTRIBUTES) <= set(reader.fieldnames)
        h, w = iio.imread(out / f"{table.stem}_overlay.png").shape[:2]
        for row in rows:  # an instance's affine centre lies in the image, its presence and axes are sane
            assert 0.0 <= float(row["presence"]) <= 1.0 and float(row["axis_major"]) >= float(row["axis_minor"]) > 0
            assert -16 <= float(row["x"]) <= w + 16 and -16 <= float(row["y"]) <= h + 16
            assert float(row["score"]) == pytest.approx(float(row["presence"]), abs=1e-6)  # the score is presence
    _check_canonical_shape(out)
