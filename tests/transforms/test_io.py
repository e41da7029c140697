"""Tests of cellseg_monai.transforms.io (LoadMicroscopy, LoadMicroscopyd) against hand-made files."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, RandFlipd, RandRotate90d

from cellseg_monai.data.io import DataError
from cellseg_monai.transforms.io import LoadMicroscopy, LoadMicroscopyd

RNG = np.random.default_rng(1)
GREY = RNG.integers(0, 4000, (12, 10), dtype=np.uint16)
RGB = RNG.integers(0, 255, (12, 10, 3), dtype=np.uint8)
RGBA = RNG.integers(0, 255, (12, 10, 4), dtype=np.uint8)
TWO = RNG.integers(0, 255, (12, 10, 2), dtype=np.uint8)


def chw(a: np.ndarray) -> np.ndarray:
    return a[None].astype(np.float32) if a.ndim == 2 else np.moveaxis(a, -1, 0).astype(np.float32)


@pytest.mark.parametrize(
    "name, array, channels, expected",
    [
        ("g.tif", GREY, None, chw(GREY)),
        ("g.tif", GREY, 1, chw(GREY)),
        ("g.tif", GREY, 3, np.repeat(chw(GREY), 3, axis=0)),
        ("c.png", RGB, None, chw(RGB)),
        ("c.png", RGB, 3, chw(RGB)),
        ("c.png", RGB, 1, RGB.astype(np.float64).mean(-1)[None]),
        ("a.png", RGBA, None, chw(RGBA)),
        ("a.png", RGBA, 3, chw(RGBA[..., :3])),
        ("a.png", RGBA, 1, RGBA[..., :3].astype(np.float64).mean(-1)[None]),
    ],
)
def test_load_image(tmp_path, name, array, channels, expected):
    path = tmp_path / name
    tifffile.imwrite(path, array) if name.endswith(".tif") else iio.imwrite(path, array)
    out = LoadMicroscopy("image", channels=channels)(str(path))
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32
    assert tuple(out.shape) == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    assert out.meta["filename_or_obj"] == str(path)
    assert out.meta["id"] == path.stem
    assert tuple(out.meta["spatial_shape"]) == (12, 10)


def test_channel_mismatch_names_file(tmp_path):
    tifffile.imwrite(tmp_path / "two.tif", TWO)
    with pytest.raises(DataError, match=r"two\.tif.*2 channel"):
        LoadMicroscopy("image", channels=3)(tmp_path / "two.tif")
    with pytest.raises(ValueError):
        LoadMicroscopy("label", channels=3)
    with pytest.raises(ValueError):
        LoadMicroscopy("mask")


def test_load_label_file_and_mask_folder(tmp_path):
    lab = np.zeros((12, 10), np.uint16)
    lab[1:3, 1:3] = 5
    lab[6:9, 4:8] = 2
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    out = LoadMicroscopy("label")(tmp_path / "lab.tif")
    assert tuple(out.shape) == (1, 12, 10) and out.dtype in (torch.int32, torch.int64)
    np.testing.assert_array_equal(out[0].numpy(), lab)
    masks = tmp_path / "s1" / "masks"
    masks.mkdir(parents=True)
    iio.imwrite(masks / "a.png", ((lab == 5) * 255).astype(np.uint8))
    iio.imwrite(masks / "b.png", ((lab == 2) * 255).astype(np.uint8))
    out = LoadMicroscopy("label")(masks)
    np.testing.assert_array_equal(out[0].numpy(), np.where(lab == 5, 1, np.where(lab == 2, 2, 0)))
    assert out.meta["id"] == "s1"


def test_dict_shape_mismatch_names_both_files(tmp_path):
    tifffile.imwrite(tmp_path / "im.tif", GREY)
    tifffile.imwrite(tmp_path / "lab.tif", np.ones((12, 11), np.uint16))
    t = Compose([LoadMicroscopyd("image"), LoadMicroscopyd("label", kind="label", ref_key="image")])
    with pytest.raises(RuntimeError) as err:  # monai Compose wraps errors in RuntimeError, cause kept
        t({"image": str(tmp_path / "im.tif"), "label": str(tmp_path / "lab.tif")})
    assert isinstance(err.value.__cause__, DataError)
    msg = str(err.value.__cause__)
    assert "im.tif" in msg and "lab.tif" in msg and "(12, 10)" in msg and "(12, 11)" in msg
    direct = LoadMicroscopyd("label", kind="label", ref_key="image")
    image = LoadMicroscopy()(tmp_path / "im.tif")
    with pytest.raises(DataError, match=r"lab\.tif.*\(12, 11\).*im\.tif.*\(12, 10\)"):
        direct({"image": image, "label": str(tmp_path / "lab.tif")})


def test_dict_empty_labels_and_missing_keys(tmp_path):
    tifffile.imwrite(tmp_path / "im.tif", GREY)
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((12, 10), np.uint16))
    data = {"image": str(tmp_path / "im.tif"), "label": str(tmp_path / "empty.tif"), "id": "im"}
    ok = LoadMicroscopyd("label", kind="label")(data)
    assert int(ok["label"].max()) == 0
    with pytest.raises(DataError, match=r"empty\.tif.*empty labels"):
        LoadMicroscopyd("label", kind="label", require_objects=True)(data)
    out = LoadMicroscopyd(["image", "scribble"], kind=["image", "scribble"], allow_missing_keys=True)(data)
    assert "scribble" not in out and out["image"].shape == (1, 12, 10)
    assert out["id"] == "im" and data["image"] == str(tmp_path / "im.tif")  # input dict not modified
    renamed = LoadMicroscopyd("label", kind="label")({**data, "id": "cellpose_name"})
    assert renamed["label"].meta["id"] == "cellpose_name"  # the datalist id wins over the file stem


def test_sample_pipeline_with_monai_spatial_transforms():
    from cellseg_monai.data.layouts import load_datalist
    from cellseg_monai.data.sample import sample_data_dir

    item = load_datalist(sample_data_dir(), "train")[0]
    t = Compose(
        [
            LoadMicroscopyd("image", channels=3),
            LoadMicroscopyd("label", kind="label", ref_key="image", require_objects=True),
            RandFlipd(["image", "label"], prob=1.0, spatial_axis=1),
            RandRotate90d(["image", "label"], prob=1.0),
        ]
    )
    out = t(item)
    img = tifffile.imread(item["image"])
    lab = tifffile.imread(item["label"])
    assert out["image"].shape == (3, *img.shape[:2]) and out["label"].shape == (1, *lab.shape)
    assert sorted(np.unique(out["label"].numpy())) == sorted(np.unique(lab))
    assert out["image"].meta["id"] == item["id"]
