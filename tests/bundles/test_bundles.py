"""Every bundle end to end through ``python -m monai.bundle``: train → evaluate → infer on tiny data, the same flow
and the same assertions for all (the output contract makes them the same); method-specific behaviour is tested in
``test_<bundle>.py`` on these very runs (``flows`` in conftest.py runs each step once per session)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from cellseg_monai.postprocessing import MEASUREMENT_COLUMNS
from tests.bundles.conftest import BUNDLE_NAMES, REPO

pytestmark = pytest.mark.slow


def _attribute_names(name: str) -> list[str]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / name / "configs" / "inference.json"))
    return list(parser.get_parsed_content("attribute_names"))


def _check_measurements(table: Path, labels: np.ndarray, attributes: list[str]) -> None:
    """The CSV has one row per object with the columns of the contract; areas and centroids are the objects'."""
    with open(table) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == [*MEASUREMENT_COLUMNS, *attributes], reader.fieldnames
    ids = np.setdiff1d(np.unique(labels), [0])
    assert sorted(int(r["id"]) for r in rows) == ids.tolist()
    if len(ids):
        areas = np.bincount(labels.ravel())[ids]
        centroids = ndimage.center_of_mass(np.ones_like(labels), labels, ids)
        for row, area, (cy, cx) in zip(sorted(rows, key=lambda r: int(r["id"])), areas, centroids, strict=True):
            assert int(row["area"]) == area
            assert abs(float(row["centroid_y"]) - cy) < 1e-6 and abs(float(row["centroid_x"]) - cx) < 1e-6
            assert 0.0 <= float(row["score"]) <= 1.0


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_training_writes_plain_best_weights_and_resumable_checkpoints(flows, name):
    flow = flows[name].trained()
    state = torch.load(flow.model, weights_only=True)  # a plain state dict, as MONAI 1.6 loads it
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    assert list((flow.root / "train").glob("checkpoint_epoch=2.pt"))
    assert list((flow.root / "train").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_evaluation_writes_metrics_and_predictions(flows, name):
    flow = flows[name]
    ev = flow.evaluated()
    rows = dict(line.rsplit(",", 1) for line in (ev / "metrics.csv").read_text().splitlines())
    for metric in flow.spec.metrics:
        assert 0.0 <= float(rows[metric]) <= 1.0, metric
    val_ids = sorted(json.loads((flow.dataset / "split.json").read_text())["val"])
    per_image = (ev / f"{flow.spec.metrics[0]}_raw.csv").read_text().splitlines()[1:]
    assert sorted(Path(row.split(",")[0]).stem for row in per_image) == val_ids
    assert sorted(p.stem for p in (ev / "predictions").glob("*.tif")) == val_ids
    attributes = _attribute_names(name)
    for i in val_ids:
        labels = tifffile.imread(ev / "predictions" / f"{i}.tif")
        assert labels.shape == tifffile.imread(flow.dataset / "labels" / f"{i}.tif").shape
        _check_measurements(ev / "predictions" / f"{i}.csv", labels, attributes)


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_inference_writes_labels_overlay_and_measurements_of_any_size(flows, name):
    flow = flows[name]
    out = flow.inferred()
    attributes = _attribute_names(name)
    images = sorted(flow.inputs().glob("*.tif"))
    assert sorted(p.name for p in out.glob("*.tif")) == [p.name for p in images]
    for image_path in images:
        labels = tifffile.imread(out / image_path.name)
        assert labels.shape == tifffile.imread(image_path).shape[:2]
        assert np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0
        assert (out / f"{image_path.stem}_overlay.png").is_file()
        _check_measurements(out / f"{image_path.stem}.csv", labels, attributes)


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_a_bad_image_ends_inference_in_one_line(name, tmp_path):
    """Issue 13: through ``monai.bundle run inference.json`` a bad input ends in one line naming the file, exit 1,
    no traceback (inference.json installs the same error report as train.json)."""
    (tmp_path / "in").mkdir()
    bad = tmp_path / "in" / "bad.tif"
    bad.write_bytes(b"not a tiff")
    config = str(REPO / "bundles" / name / "configs" / "inference.json")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--dataset_dir", str(tmp_path / "in")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("CELLSEG_DEBUG", None)
    cmd += ["--output_dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert len(errors) == 1 and str(bad) in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert bad.read_bytes() == b"not a tiff" and not list((tmp_path / "out").glob("*.tif"))


def test_a_bad_image_ends_evaluation_in_one_line(disc_dataset, tmp_path):
    """evaluate.json runs over train.json, whose ``initialize`` installs the one-line error report (issue 13)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(disc_dataset, data)
    val_id = json.loads((data / "split.json").read_text())["val"][0]
    bad = data / "images" / f"{val_id}.tif"
    bad.write_bytes(b"not a tiff")
    bundle = REPO / "bundles" / "supervised_unet"
    configs = str([str(bundle / "configs" / c) for c in ("train.json", "evaluate.json")])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir", str(data)]
    cmd += ["--eval_dir", str(tmp_path / "eval"), "--ckpt_path", str(bundle / "models" / "model.pt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("CELLSEG_DEBUG", None)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert len(errors) == 1 and str(bad) in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
