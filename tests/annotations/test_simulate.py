"""Tests of cellseg_monai.annotations.simulate (simulated weak labels written as dataset files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.draw import disk

from cellseg_monai.annotations.simulate import simulate_dataset
from cellseg_monai.data.layouts import load_datalist


def make_dataset(root: Path) -> dict[str, np.ndarray]:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    labels = {}
    for k, sid in enumerate(["a", "b", "c"]):
        lab = np.zeros((64, 64), np.uint16)
        for i in range(4 + k):
            rr, cc = disk((8 + 12 * (i % 5), 10 + 20 * (i // 5) + 3 * k), 5, shape=lab.shape)
            lab[rr, cc] = i + 1
        tifffile.imwrite(root / "images" / f"{sid}.tif", np.zeros((64, 64), np.uint8))
        tifffile.imwrite(root / "labels" / f"{sid}.tif", lab)
        labels[sid] = lab
    (root / "split.json").write_text(json.dumps({"train": ["a", "b"], "val": ["c"]}))
    return labels


def test_simulate_dataset_writes_scribbles(tmp_path):
    labels = make_dataset(tmp_path / "ds")
    paths = simulate_dataset(tmp_path / "ds", budget=2, seed=1)
    assert sorted(Path(p).name for p in paths) == ["a.tif", "b.tif", "c.tif"]
    for p in paths:
        scr = tifffile.imread(p)
        lab = labels[Path(p).stem]
        assert scr.dtype == np.uint8 and scr.shape == lab.shape
        assert len(set(np.unique(lab[scr >= 2]).tolist()) - {0}) == 2
        assert np.all(lab[scr == 1] == 0)
    dl = load_datalist(tmp_path / "ds", "train")
    assert [Path(d["scribble"]).name for d in dl] == ["a.tif", "b.tif"]
    before = [tifffile.imread(p) for p in paths]
    simulate_dataset(tmp_path / "ds", budget=2, seed=1)
    for p, b in zip(paths, before, strict=True):
        np.testing.assert_array_equal(tifffile.imread(p), b)


def test_simulate_dataset_split_and_out_dir(tmp_path):
    make_dataset(tmp_path / "ds")
    paths = simulate_dataset(tmp_path / "ds", split="val", out_dir=tmp_path / "out")
    assert paths == [str(tmp_path / "out" / "c.tif")]
    assert not (tmp_path / "ds" / "weak").exists()


def test_simulate_masks_and_counts_read_back_as_user_weak_labels(tmp_path):
    from cellseg_monai.annotations.foreground_count import read_foreground_count

    labels = make_dataset(tmp_path / "ds")
    masks = simulate_dataset(tmp_path / "ds", kind="masks")
    assert sorted(Path(p).name for p in masks) == ["a.tif", "b.tif", "c.tif"]
    (counts,) = simulate_dataset(tmp_path / "ds", kind="counts")
    assert counts == str(tmp_path / "ds" / "weak" / "counts.json")
    assert json.loads(Path(counts).read_text()) == {"a": 4, "b": 5, "c": 6}  # make_dataset draws 4 + k discs
    for sid, lab in labels.items():
        mask, count = read_foreground_count(tmp_path / "ds", sid)
        np.testing.assert_array_equal(mask, (lab > 0).astype(np.uint8))
        assert count == len(np.unique(lab)) - 1


def test_simulate_partial_keeps_a_quarter_of_the_objects_whole(tmp_path):
    labels = make_dataset(tmp_path / "ds")
    paths = simulate_dataset(tmp_path / "ds", kind="partial", budget=0.25, seed=3)
    for p in paths:
        kept, full = tifffile.imread(p), labels[Path(p).stem]
        assert kept.dtype == np.uint16
        ids = set(np.unique(kept).tolist()) - {0}
        n = len(np.unique(full)) - 1
        assert len(ids) == int(np.ceil(0.25 * n))
        for i in ids:  # a kept object is whole and keeps its id; nothing else is labelled
            np.testing.assert_array_equal(kept == i, full == i)
        assert np.isin(kept, [0, *ids]).all()
    with pytest.raises(ValueError, match="fraction"):
        simulate_dataset(tmp_path / "ds", kind="partial", budget=2)


def test_simulate_points_are_centroids(tmp_path):
    from scipy import ndimage

    from cellseg_monai.annotations.points import read_points_csv

    labels = make_dataset(tmp_path / "ds")
    paths = simulate_dataset(tmp_path / "ds", kind="points")
    assert sorted(Path(p).name for p in paths) == ["a.csv", "b.csv", "c.csv"]
    for p in paths:
        lab = labels[Path(p).stem]
        ids = np.unique(lab)[1:]
        expected = np.array(ndimage.center_of_mass(np.ones_like(lab), lab, ids))
        got = read_points_csv(p)
        assert got.shape == expected.shape
        np.testing.assert_allclose(np.sort(got, axis=0), np.sort(expected, axis=0), atol=0.51)


def test_simulate_points_budget_clicks_the_cells_partial_keeps(tmp_path):
    """--budget 0.5 for points: the centroids of the cells that partial labels keep at 0.5 with the same seed, and
    the cells the LACSS training transform clicks at annotation_budget 0.5."""
    from scipy import ndimage

    from cellseg_monai.annotations.points import read_points_csv
    from cellseg_monai.transforms.points import SimulatePoints

    labels = make_dataset(tmp_path / "ds")
    points = simulate_dataset(tmp_path / "ds", kind="points", budget=0.5, seed=4)
    partial = simulate_dataset(tmp_path / "ds", kind="partial", budget=0.5, seed=4)
    for p, q in zip(points, partial, strict=True):
        lab, kept = labels[Path(p).stem], tifffile.imread(q)
        ids = np.unique(kept)[1:]
        assert len(ids) == int(np.ceil(0.5 * (len(np.unique(lab)) - 1)))
        expected = np.array(ndimage.center_of_mass(np.ones_like(lab), lab, ids)).reshape(-1, 2)
        np.testing.assert_allclose(read_points_csv(p), expected, atol=1e-6)
        trained = np.asarray(SimulatePoints(seed=4, fraction=0.5)(lab[None], sample_id=Path(p).stem))[0]
        assert sorted(np.unique(trained)[1:].tolist()) == ids.tolist()


@pytest.mark.parametrize("budget", [2, 0.0, 1.5])
def test_simulate_points_budget_must_be_a_fraction(tmp_path, budget):
    make_dataset(tmp_path / "ds")
    with pytest.raises(ValueError, match="fraction budget"):
        simulate_dataset(tmp_path / "ds", kind="points", budget=budget)
    assert not (tmp_path / "ds" / "weak").exists()


@pytest.mark.parametrize("kind, error", [("x", ValueError)])
def test_simulate_dataset_kinds(tmp_path, kind, error):
    make_dataset(tmp_path / "ds")
    with pytest.raises(error, match=kind):
        simulate_dataset(tmp_path / "ds", kind=kind)
