"""Tests of cellseg_monai.transforms.scribbles (SimulateScribbles, SimulateScribblesd)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from cellseg_monai.data.io import DataError
from cellseg_monai.transforms.io import LoadMicroscopyd
from cellseg_monai.transforms.scribbles import SimulateScribbles, SimulateScribblesd

LAB = np.zeros((40, 48), np.uint16)
for _i, (_y, _x) in enumerate([(5, 5), (5, 25), (20, 10), (30, 35), (25, 40), (12, 40)]):
    LAB[_y : _y + 6, _x : _x + 7] = _i + 1


@pytest.fixture
def files(tmp_path):
    tifffile.imwrite(tmp_path / "cell.tif", np.zeros((40, 48), np.uint8))
    tifffile.imwrite(tmp_path / "cell_lab.tif", LAB)
    return tmp_path


LOAD = Compose([LoadMicroscopyd("image"), LoadMicroscopyd("label", kind="label", ref_key="image")])


@pytest.mark.parametrize("budget, n_expected", [(2, 2), (0.5, 3), (1.0, 6)])
def test_simulated_from_loaded_label(files, budget, n_expected):
    d = LOAD({"image": str(files / "cell.tif"), "label": str(files / "cell_lab.tif"), "id": "cell"})
    out = SimulateScribblesd("label", budget=budget)(d)
    scr = out["scribble"]
    assert isinstance(scr, MetaTensor) and tuple(scr.shape) == (1, 40, 48)
    assert not scr.dtype.is_floating_point
    assert scr.meta["filename_or_obj"] == str(files / "cell_lab.tif") and scr.meta["id"] == "cell"
    s = scr[0].numpy()
    assert len(set(np.unique(LAB[s >= 2]).tolist()) - {0}) == n_expected
    assert np.all(LAB[s >= 2] > 0) and np.all(LAB[s == 1] == 0)
    again = SimulateScribblesd("label", budget=budget)(d)["scribble"]
    assert torch.equal(scr.as_tensor(), again.as_tensor())


def test_separate_touching_is_passed_on(files):
    lab = np.zeros((30, 40), np.int32)
    lab[5:11, 5:12] = 1
    lab[5:11, 12:18] = 2  # touches object 1 on its right
    lab[20:26, 20:30] = 3  # alone
    d = {"label": MetaTensor(torch.as_tensor(lab.astype(np.int32))[None]), "id": "cell"}
    plain = SimulateScribblesd("label", budget=1.0)(d)["scribble"][0].numpy()
    seams = SimulateScribblesd("label", budget=1.0, separate_touching=True)(d)["scribble"][0].numpy()
    changed = plain != seams
    # every object is annotated: the columns on both sides of the 1 | 2 seam, rows 5..10, except foreground strokes
    expected = np.zeros_like(changed)
    expected[5:11, 11:13] = True
    expected &= plain < 2
    assert expected.any()
    np.testing.assert_array_equal(changed, expected)
    np.testing.assert_array_equal(seams[changed], 1)


def test_sample_id_from_dict_or_meta(files):
    d = LOAD({"image": str(files / "cell.tif"), "label": str(files / "cell_lab.tif")})  # no "id": meta["id"]
    by_meta = SimulateScribblesd("label", budget=1)(d)["scribble"]
    by_dict = SimulateScribblesd("label", budget=1)({**d, "id": "other"})["scribble"]
    assert by_meta.meta["id"] == "cell_lab" and by_dict.meta["id"] == "other"
    by_arg = SimulateScribbles(budget=1)(torch.as_tensor(LAB.astype(np.int32))[None], sample_id="cell_lab")
    assert torch.equal(by_meta.as_tensor(), by_arg.as_tensor())
    with pytest.raises(ValueError, match="sample id"):
        SimulateScribbles()(torch.as_tensor(LAB.astype(np.int32))[None])


def test_user_scribbles_pass_through(files):
    user = torch.zeros((1, 40, 48), dtype=torch.int32)
    user[0, 0, 0] = 1
    d = LOAD({"image": str(files / "cell.tif"), "label": str(files / "cell_lab.tif"), "id": "cell"})
    out = SimulateScribblesd("label")({**d, "scribble": user})
    assert out["scribble"] is user
    arr2d = np.zeros((40, 48), np.int32)
    assert tuple(SimulateScribblesd("label")({**d, "scribble": arr2d})["scribble"].shape) == (1, 40, 48)
    drawn = np.zeros((40, 48), np.uint8)
    drawn[6:9, 7:10] = 2
    iio.imwrite(files / "drawn.png", drawn)
    loaded = SimulateScribblesd("label")({**d, "scribble": str(files / "drawn.png")})["scribble"]
    np.testing.assert_array_equal(loaded[0].numpy(), drawn)


def test_user_scribbles_shape_mismatch_names_files(files):
    iio.imwrite(files / "small.png", np.zeros((20, 48), np.uint8))
    d = LOAD({"image": str(files / "cell.tif"), "label": str(files / "cell_lab.tif"), "id": "cell"})
    with pytest.raises(DataError, match=r"small\.png.*\(20, 48\).*cell_lab\.tif.*\(40, 48\)"):
        SimulateScribblesd("label")({**d, "scribble": str(files / "small.png")})


def test_an_image_with_scribbles_and_no_label_uses_the_scribbles(files):
    """A user scribbled the image and outlined nothing: the scribbles are used, checked against the image's size."""
    drawn = np.zeros((40, 48), np.uint8)
    drawn[6:9, 7:10], drawn[0, :] = 2, 1
    iio.imwrite(files / "drawn.png", drawn)
    image = LoadMicroscopyd("image")({"image": str(files / "cell.tif"), "id": "cell"})
    out = SimulateScribblesd("label")({**image, "scribble": str(files / "drawn.png")})
    assert "label" not in out
    np.testing.assert_array_equal(out["scribble"][0].numpy(), drawn)
    iio.imwrite(files / "small.png", np.zeros((20, 48), np.uint8))
    with pytest.raises(DataError, match=r"small\.png.*\(20, 48\) but the image .*cell\.tif.*\(40, 48\)"):
        SimulateScribblesd("label")({**image, "scribble": str(files / "small.png")})


def test_neither_label_nor_scribbles_is_an_error_naming_the_sample(files):
    image = LoadMicroscopyd("image")({"image": str(files / "cell.tif"), "id": "cell"})
    with pytest.raises(DataError, match=r"sample 'cell': has neither labels \('label'\) nor scribbles"):
        SimulateScribblesd("label")(image)
    assert SimulateScribblesd("label", allow_missing_keys=True)(image) == image
