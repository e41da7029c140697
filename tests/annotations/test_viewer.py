"""Labels saved from a viewer as a bundle's training dataset (cellseg_monai.annotations.viewer)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from cellseg_monai.annotations.viewer import viewer_labels, write_training_dataset
from cellseg_monai.data.io import DataError
from cellseg_monai.data.layouts import load_datalist


def _pair(folder, image_id, label, shape=(20, 24)):
    image = folder / f"{image_id}.png"
    iio.imwrite(image, np.full(shape, 100, np.uint8))
    path = folder / f"{image_id}_label.png"
    iio.imwrite(path, label.astype(np.uint8))
    return image, path


def test_a_mask_becomes_instances_and_ids_are_kept(tmp_path):
    mask = np.zeros((20, 24), np.uint8)
    mask[2:6, 2:6], mask[10:15, 10:20] = 255, 255  # two blobs drawn with one value
    np.testing.assert_array_equal(viewer_labels(_pair(tmp_path, "a", mask)[1], "instances"), _components(mask))
    ids = np.zeros((20, 24), np.uint8)
    ids[2:6, 2:6], ids[2:6, 6:10] = 3, 7  # touching nuclei with their own ids stay apart
    np.testing.assert_array_equal(viewer_labels(_pair(tmp_path, "b", ids)[1], "instances"), ids)
    assert viewer_labels(_pair(tmp_path, "c", np.zeros((20, 24)))[1], "instances") is None


def _components(mask):
    from scipy import ndimage

    return ndimage.label(mask > 0)[0]


def test_scribbles_are_kept_as_drawn_and_bad_values_named(tmp_path):
    scr = np.zeros((20, 24), np.uint8)
    scr[0, :], scr[5, 3:9] = 1, 2
    np.testing.assert_array_equal(viewer_labels(_pair(tmp_path, "a", scr)[1], "scribbles"), scr)
    assert viewer_labels(_pair(tmp_path, "z", np.zeros((20, 24)))[1], "scribbles") is None
    rgb = np.zeros((20, 24, 3), np.uint8)
    rgb[..., 0] = 200
    iio.imwrite(tmp_path / "colour.png", rgb)
    with pytest.raises(DataError, match=r"colour\.png: scribble image has colour channels"):
        viewer_labels(tmp_path / "colour.png", "scribbles")
    with pytest.raises(ValueError, match="kind must be one of"):
        viewer_labels(tmp_path / "colour.png", "masks")


def test_dataset_of_scribbles_loads_without_labels(tmp_path):
    src = tmp_path / "store"
    src.mkdir()
    pairs = []
    for k in range(5):
        scr = np.zeros((20, 24), np.uint8)
        scr[k, :], scr[10, 2 + k : 8 + k] = 1, 2
        pairs.append(_pair(src, f"img{k}", scr))
    pairs.append(_pair(src, "empty", np.zeros((20, 24))))  # saved but not annotated: skipped
    out = tmp_path / "ds"
    split = write_training_dataset(pairs, out, "scribbles", val_fraction=0.2, seed=0)
    assert len(split["val"]) == 1 and sorted(split["train"] + split["val"]) == [f"img{k}" for k in range(5)]
    assert json.loads((out / "split.json").read_text()) == split
    assert not (out / "labels").exists()
    train = load_datalist(out, "train", labels_or="scribble")
    assert [d["id"] for d in train] == split["train"] and all("label" not in d for d in train)
    first = train[0]
    k = int(first["id"][-1])
    np.testing.assert_array_equal(tifffile.imread(first["scribble"]), iio.imread(src / f"img{k}_label.png"))
    assert (out / "images" / f"img{k}.png").resolve() == (src / f"img{k}.png").resolve()
    with pytest.raises(DataError, match="not empty"):
        write_training_dataset(pairs, out, "scribbles")


def test_one_image_is_train_and_val_and_bad_pairs_are_named(tmp_path):
    ids = np.zeros((20, 24), np.uint8)
    ids[2:6, 2:6] = 1
    split = write_training_dataset([_pair(tmp_path, "only", ids)], tmp_path / "one", "instances")
    assert split == {"train": ["only"], "val": ["only-val"]}
    (val,) = load_datalist(tmp_path / "one", "val")
    np.testing.assert_array_equal(tifffile.imread(val["label"]), ids)
    assert val["image"].endswith("images/only-val.png")
    image, _ = _pair(tmp_path, "small", ids)
    iio.imwrite(tmp_path / "small_label.png", ids[:10])
    with pytest.raises(DataError, match=r"small_label\.png: label has height x width \(10, 24\) but image"):
        write_training_dataset([(image, tmp_path / "small_label.png")], tmp_path / "bad", "instances")
    with pytest.raises(DataError, match="none of the 1 saved labels holds an annotation"):
        write_training_dataset([_pair(tmp_path, "z", np.zeros((20, 24)))], tmp_path / "none", "instances")


def test_points_become_a_points_csv(tmp_path):
    from cellseg_monai.annotations import read_points_csv

    drawn = np.zeros((20, 24), np.uint8)
    drawn[3:5, 4:6] = 2  # a 2x2 dot: centroid (3.5, 4.5), its first nearest pixel (3, 4)
    drawn[12, 17] = 3  # a one-pixel dot, another value
    drawn[15:18, 2] = 2  # an L-shaped stroke: centroid (16.4, 2.6) lies off it; nearest on it (16, 2), tied (17, 3)
    drawn[17, 3:5] = 2
    scribbled = drawn.copy()
    scribbled[0, :] = 1  # a background stroke of a scribble image: ignored
    pairs = [_pair(tmp_path, "dots", drawn), _pair(tmp_path, "scribbled", scribbled)]
    split = write_training_dataset(pairs, tmp_path / "ds", "points", val_fraction=0.5)
    assert sorted(split["train"] + split["val"]) == ["dots", "scribbled"]
    for image_id in ("dots", "scribbled"):
        pts = read_points_csv(tmp_path / "ds" / "weak" / "points" / f"{image_id}.csv", (20, 24))
        np.testing.assert_allclose(pts, [[3.0, 4.0], [12.0, 17.0], [16.0, 2.0]])
    assert not (tmp_path / "ds" / "labels").exists() and not (tmp_path / "ds" / "weak" / "masks").exists()
    assert len(load_datalist(tmp_path / "ds", "all", labels_or="points")) == 2
    only_background = np.zeros((20, 24), np.uint8)
    only_background[2:8, 2:8] = 1
    assert viewer_labels(_pair(tmp_path, "nodots", only_background)[1], "points") is None
