"""Tests of cellseg_monai.data.layouts on hand-made dataset folders."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from cellseg_monai.data.io import DataError
from cellseg_monai.data.layouts import detect_layout, list_images, load_datalist, split_ids

IMG = np.zeros((8, 8), np.uint8)
LAB = np.zeros((8, 8), np.uint16)
LAB[2:4, 2:4] = 1


def make_standard(root: Path, ids: list[str], labelled: list[str] | None = None, split: dict | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for sid in ids:
        tifffile.imwrite(root / "images" / f"{sid}.tif", IMG)
    for sid in ids if labelled is None else labelled:
        tifffile.imwrite(root / "labels" / f"{sid}.tif", LAB)
    if split is not None:
        (root / "split.json").write_text(json.dumps(split))
    return root


IDS = [f"img{i:02d}" for i in range(10)]


def test_standard_with_split_json(tmp_path):
    root = make_standard(tmp_path / "ds", IDS, split={"train": IDS[:6], "val": IDS[6:8], "test": IDS[8:]})
    for split, expected in (("train", IDS[:6]), ("val", IDS[6:8]), ("test", IDS[8:]), ("all", IDS)):
        dl = load_datalist(root, split)
        assert [d["id"] for d in dl] == expected
        for d in dl:
            assert d["image"] == str(root / "images" / f"{d['id']}.tif")
            assert d["label"] == str(root / "labels" / f"{d['id']}.tif")
            assert "scribble" not in d


@pytest.mark.parametrize("val_fraction, seed, n_val", [(0.2, 0, 2), (0.2, 1, 2), (0.3, 0, 3), (0.01, 0, 1)])
def test_derived_split_is_deterministic_partition(tmp_path, val_fraction, seed, n_val):
    root = make_standard(tmp_path / "ds", IDS)
    train = [d["id"] for d in load_datalist(root, "train", val_fraction=val_fraction, seed=seed)]
    val = [d["id"] for d in load_datalist(root, "val", val_fraction=val_fraction, seed=seed)]
    assert len(val) == n_val
    assert sorted(train + val) == IDS and not set(train) & set(val)
    assert val == [d["id"] for d in load_datalist(root, "val", val_fraction=val_fraction, seed=seed)]
    # reference: numpy permutation of the sorted ids, first n_val are val
    perm = np.random.default_rng(seed).permutation(len(IDS))
    assert val == sorted(IDS[i] for i in perm[:n_val])


def test_derived_split_differs_by_seed():
    a = {s: split_ids(IDS, 0.3, seed=s)["val"] for s in range(5)}
    assert len({tuple(v) for v in a.values()}) > 1


def test_split_json_partial_keys(tmp_path):
    root = make_standard(tmp_path / "ds", IDS, split={"train": IDS[:7], "test": IDS[9:]})
    assert [d["id"] for d in load_datalist(root, "val")] == IDS[7:9]  # complement of train minus test
    root2 = make_standard(tmp_path / "ds2", IDS, split={"train": IDS})
    with pytest.raises(DataError, match="test"):
        load_datalist(root2, "test")


def test_split_json_missing_id(tmp_path):
    root = make_standard(tmp_path / "ds", IDS[:3], split={"train": ["img00", "ghost"]})
    with pytest.raises(DataError, match=r"split\.json.*ghost"):
        load_datalist(root, "train")


def test_missing_label(tmp_path):
    root = make_standard(tmp_path / "ds", IDS[:3], labelled=IDS[:2])
    with pytest.raises(DataError, match=r"img02\.tif.*no label"):
        load_datalist(root, "all")
    dl = load_datalist(root, "all", require_labels=False)
    assert [("label" in d) for d in dl] == [True, True, False]


def test_scribbles_are_picked_up(tmp_path):
    root = make_standard(tmp_path / "ds", IDS[:3])
    (root / "weak" / "scribbles").mkdir(parents=True)
    iio.imwrite(root / "weak" / "scribbles" / "img01.png", IMG)
    dl = {d["id"]: d for d in load_datalist(root, "all")}
    assert dl["img01"]["scribble"] == str(root / "weak" / "scribbles" / "img01.png")
    assert "scribble" not in dl["img00"]


def test_scribbles_can_stand_in_for_labels(tmp_path):
    """labels_or='scribble': an image the user only scribbled is kept; one with neither is refused, named."""
    root = make_standard(tmp_path / "ds", IDS[:3], labelled=["img00"])
    (root / "weak" / "scribbles").mkdir(parents=True)
    iio.imwrite(root / "weak" / "scribbles" / "img01.png", IMG)
    with pytest.raises(DataError, match=r"img02\.tif: image 'img02' has no label .* or scribbles \(weak/scribbles"):
        load_datalist(root, "all", labels_or="scribble")
    tifffile.imwrite(root / "labels" / "img02.tif", LAB)
    dl = {d["id"]: d for d in load_datalist(root, "all", labels_or="scribble")}
    assert set(dl) == {"img00", "img01", "img02"} and "label" not in dl["img01"] and "scribble" in dl["img01"]
    with pytest.raises(DataError, match=r"img01\.tif: image 'img01' has no label \(labels/<id>\.\*\) and labels"):
        load_datalist(root, "all")  # without labels_or, labels stay required
    with pytest.raises(ValueError, match="labels_or must be one of"):
        load_datalist(root, "all", labels_or="masks")


def test_points_can_stand_in_for_labels(tmp_path):
    root = make_standard(tmp_path / "ds", IDS[:2], labelled=["img00"])
    with pytest.raises(DataError, match=r"img01\.tif: image 'img01' has no label .* or points \(weak/points/<id>\.csv"):
        load_datalist(root, "all", labels_or="points")
    (root / "weak" / "points").mkdir(parents=True)
    (root / "weak" / "points" / "img01.csv").write_text("y,x\n3,4\n")
    assert [d["id"] for d in load_datalist(root, "all", labels_or="points")] == ["img00", "img01"]


def test_dsb_layout(tmp_path):
    root = tmp_path / "stage1"
    for sid in ("bbb", "aaa"):
        (root / sid / "images").mkdir(parents=True)
        (root / sid / "masks").mkdir()
        iio.imwrite(root / sid / "images" / f"{sid}.png", np.zeros((8, 8, 4), np.uint8))
        iio.imwrite(root / sid / "masks" / "m1.png", (LAB > 0).astype(np.uint8) * 255)
    assert detect_layout(root) == "dsb2018"
    dl = load_datalist(root, "all")
    assert [d["id"] for d in dl] == ["aaa", "bbb"]
    assert dl[0]["image"] == str(root / "aaa" / "images" / "aaa.png")
    assert dl[0]["label"] == str(root / "aaa" / "masks")


def test_cellpose_pairs(tmp_path):
    root = tmp_path / "cp"
    root.mkdir()
    for name in ("000", "001"):
        tifffile.imwrite(root / f"{name}_img.tif", IMG)
        tifffile.imwrite(root / f"{name}_masks.tif", LAB)
    tifffile.imwrite(root / "002_img.tif", IMG)
    assert detect_layout(root) == "cellpose"
    dl = load_datalist(root, "all", require_labels=False)
    assert [(d["id"], Path(d["image"]).name, Path(d.get("label", "-")).name) for d in dl] == [
        ("000", "000_img.tif", "000_masks.tif"),
        ("001", "001_img.tif", "001_masks.tif"),
        ("002", "002_img.tif", "-"),
    ]
    with pytest.raises(DataError, match="002_img.tif"):
        load_datalist(root, "all")


def test_unknown_layout(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no known dataset layout"):
        load_datalist(tmp_path / "x")
    with pytest.raises(DataError, match="does not exist"):
        load_datalist(tmp_path / "nothing")


def test_list_images(tmp_path):
    root = make_standard(tmp_path / "ds", ["b", "a"])
    assert [d["id"] for d in list_images(root)] == ["a", "b"]
    assert list_images(root / "images" / "b.tif") == [{"image": str(root / "images" / "b.tif"), "id": "b"}]
    plain = tmp_path / "plain"
    plain.mkdir()
    iio.imwrite(plain / "z.png", IMG)
    tifffile.imwrite(plain / "y.tif", IMG)
    (plain / "notes.md").write_text("x")
    assert [d["id"] for d in list_images(plain)] == ["y", "z"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        list_images(empty)
    with pytest.raises(DataError, match="not an image"):
        list_images(plain / "notes.md")


def test_user_scribbles_replacing_the_budget_are_announced(tmp_path, caplog):
    import logging

    import tifffile

    from cellseg_monai.data import load_datalist

    for sub in ("images", "labels", "weak/scribbles"):
        (tmp_path / sub).mkdir(parents=True)
    for sid in ("a", "b"):
        tifffile.imwrite(tmp_path / "images" / f"{sid}.tif", np.zeros((8, 8), np.uint8))
        tifffile.imwrite(tmp_path / "labels" / f"{sid}.tif", np.ones((8, 8), np.uint16))
    tifffile.imwrite(tmp_path / "weak" / "scribbles" / "a.tif", np.zeros((8, 8), np.uint8))
    with caplog.at_level(logging.WARNING):
        items = load_datalist(tmp_path, "all")
    assert [("scribble" in i) for i in items] == [True, False]
    assert "1 of 2" in caplog.text and "annotation_budget" in caplog.text


@pytest.mark.parametrize(
    "split, shared",
    [
        ({"train": IDS[:6], "val": IDS[5:8]}, "1 id(s) in both 'train' and 'val': img05;"),
        ({"train": IDS[:4], "val": IDS[4:8], "test": IDS[6:]}, "2 id(s) in both 'val' and 'test': img06, img07;"),
        ({"train": IDS, "test": IDS[8:]}, "2 id(s) in both 'train' and 'test': img08, img09;"),
    ],
)
def test_split_json_with_an_id_in_two_parts_is_refused(tmp_path, split, shared):
    root = make_standard(tmp_path / "ds", IDS, split=split)
    for part in ("train", "val", "test"):  # whichever part is asked for: the file is wrong
        with pytest.raises(DataError) as info:
            load_datalist(root, part)
        assert str(info.value) == f"{root / 'split.json'}: {shared} an image may be in one split only"
