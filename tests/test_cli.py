from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from tests.bundles.conftest import make_disc_dataset


def cli(*args, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "cellseg_monai.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    return proc


@pytest.fixture()
def dataset(tmp_path):
    return make_disc_dataset(tmp_path / "data", n_train=2, n_val=1)


def test_simulate_writes_one_scribble_file_per_image(dataset):
    proc = cli("simulate", dataset, "--budget", "0.5")
    assert proc.returncode == 0, proc.stderr
    files = sorted((dataset / "weak" / "scribbles").glob("*.tif"))
    assert [f.stem for f in files] == sorted(p.stem for p in (dataset / "images").glob("*.tif"))
    scribbles = tifffile.imread(files[0])
    labels = tifffile.imread(dataset / "labels" / files[0].name)
    assert set(np.unique(scribbles)) <= {0, 1, 2}
    assert np.all(labels[scribbles == 2] > 0) and np.all(labels[scribbles == 1] == 0)


def test_simulate_points_default_clicks_every_cell_and_budget_some(dataset, tmp_path):
    from cellseg_monai.annotations.points import read_points_csv

    assert cli("simulate", dataset, "--kind", "points").returncode == 0
    assert cli("simulate", dataset, "--kind", "points", "--budget", "0.25", "--out_dir", tmp_path / "p").returncode == 0
    for every in sorted((dataset / "weak" / "points").glob("*.csv")):
        n = len(np.unique(tifffile.imread(dataset / "labels" / f"{every.stem}.tif"))) - 1
        assert len(read_points_csv(every)) == n
        assert len(read_points_csv(tmp_path / "p" / every.name)) == max(1, int(np.ceil(0.25 * n)))


def test_evaluate_prints_table_and_writes_json(dataset, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    labels = sorted((dataset / "labels").glob("*.tif"))
    tifffile.imwrite(pred / labels[0].name, tifffile.imread(labels[0]))  # perfect prediction
    blank = np.zeros_like(tifffile.imread(labels[1]))
    tifffile.imwrite(pred / labels[1].name, blank)  # empty prediction; the third is missing
    out = tmp_path / "scores.json"
    proc = cli("evaluate", "--pred", pred, "--gt", dataset, "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "f1@0.5" in proc.stdout
    result = json.loads(out.read_text())
    per_image = {row["id"]: row for row in result["per_image"]}
    assert per_image[labels[0].stem]["f1@0.5"] == 1.0
    assert per_image[labels[1].stem]["f1@0.5"] == 0.0
    assert labels[2].stem in result["missing"]
    assert result["per_image_mean"]["f1@0.5"] == pytest.approx(1 / 3)


def test_evaluate_size_mismatch_names_the_file(dataset, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    name = sorted((dataset / "labels").glob("*.tif"))[0].name
    tifffile.imwrite(pred / name, np.zeros((5, 5), np.uint16))
    proc = cli("evaluate", "--pred", pred, "--gt", dataset / "labels")
    assert proc.returncode != 0
    assert name in proc.stderr


def test_unknown_bundle_lists_known_ones(tmp_path):
    proc = cli("segment", tmp_path, "--bundle", "nonexistent")
    assert proc.returncode != 0
    assert "impartial" in proc.stderr
