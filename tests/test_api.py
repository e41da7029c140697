"""The Python API (cellseg_monai.api): the same labels as ``monai.bundle run inference.json``, for any layout, dtype
and size of image; per-object table against scipy; bad input as one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from monai.bundle import run
from scipy import ndimage

import cellseg_monai
from cellseg_monai.data import sample_data_dir
from cellseg_monai.data.io import DataError
from cellseg_monai.guards import UsageError, describe_error

# impartial: SlidingWindowInferer + mixture post-processing; canonical_shape: tiled instance inferer with per-object
# attributes (padding path on the small odd image)
BUNDLES = ["impartial", "canonical_shape"]
SAMPLE = sorted(Path(sample_data_dir(), "images").glob("*.tif"))[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, np.ndarray]:
    """The first embedded sample image (192x192x3 uint8) and a non-square odd-size crop of it (77x131x3)."""
    full = tifffile.imread(SAMPLE)
    return {"sample": full, "odd": np.ascontiguousarray(full[3:80, 5:136])}


@pytest.fixture(scope="module", params=BUNDLES)
def bundle_run(request, images, tmp_path_factory) -> tuple[str, Path]:
    """What ``monai.bundle run`` of the bundle's inference.json writes for the two images (the reference)."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    (tmp / "in").mkdir()
    for image_id, image in images.items():
        tifffile.imwrite(tmp / "in" / f"{image_id}.tif", image)
    root = cellseg_monai.find_bundle(name)
    run(
        config_file=str(root / "configs" / "inference.json"),
        bundle_root=str(root),
        dataset_dir=str(tmp / "in"),
        output_dir=str(tmp / "out"),
        device="$torch.device('cpu')",
    )
    return name, tmp / "out"


@pytest.fixture(scope="module")
def model():
    """A bundle that is quick on CPU, for the tests of the API's own behaviour."""
    return cellseg_monai.load_bundle("supervised_unet", device="cpu")


def test_pixel_identical_to_bundle_run_and_same_table_as_its_csv(bundle_run, images):
    name, out = bundle_run
    api = cellseg_monai.load_bundle(name, device="cpu")
    for image_id, image in images.items():
        labels, table = api.segment(image)
        expected = tifffile.imread(out / f"{image_id}.tif")
        assert labels.shape == image.shape[:2] and labels.dtype == np.uint16
        assert labels.max() > 0, f"{name} found nothing in {image_id}: the comparison would be vacuous"
        np.testing.assert_array_equal(labels, expected)
        with open(out / f"{image_id}.csv") as f:
            rows = list(csv.DictReader(f))
        assert list(table) == list(rows[0])
        for column, values in table.items():
            np.testing.assert_allclose(values, [float(r[column]) for r in rows], rtol=1e-6, err_msg=column)


def test_table_matches_scipy_measurements(model, images):
    labels, table = model.segment(images["sample"])
    ids = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(table["id"], ids)
    np.testing.assert_array_equal(table["area"], ndimage.sum_labels(np.ones_like(labels), labels, ids))
    centroids = np.asarray(ndimage.center_of_mass(np.ones_like(labels), labels, ids))
    np.testing.assert_allclose(np.stack([table["centroid_y"], table["centroid_x"]], axis=1), centroids)
    grey = images["sample"].astype(np.float64).mean(axis=-1)
    np.testing.assert_allclose(table["mean_intensity"], ndimage.mean(grey, labels, ids))
    assert ((table["score"] >= 0) & (table["score"] <= 1)).all()


def test_layouts_and_dtypes_give_the_same_labels(model, images):
    rgb = images["odd"]
    labels, _ = model.segment(rgb)
    assert labels.max() > 0
    same = {
        "channel-first (C, H, W)": np.moveaxis(rgb, -1, 0),
        "float64 values": rgb.astype(np.float64),
        "leading singleton axis": rgb[None],
        "RGBA (alpha dropped)": np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1),
    }
    for layout, image in same.items():
        np.testing.assert_array_equal(model.segment(image)[0], labels, err_msg=layout)
    grey = rgb[..., 1].astype(np.uint16) * 40  # grey goes to the 3-channel network as the grey channel repeated
    np.testing.assert_array_equal(model.segment(grey)[0], model.segment(np.stack([grey] * 3, axis=-1))[0])


def test_a_bundle_folder_and_explicit_weights_are_the_shipped_bundle(model, images):
    root = cellseg_monai.find_bundle("supervised_unet")
    other = cellseg_monai.load_bundle(str(root), ckpt_path=root / "models" / "model.pt", device="cpu")
    np.testing.assert_array_equal(other.segment(images["odd"])[0], model.segment(images["odd"])[0])
    assert cellseg_monai.load_bundle("imppartial", device="cpu").bundle_root == cellseg_monai.find_bundle("impartial")


def test_config_overrides_reach_the_postprocessing(model, images):
    labels, _ = model.segment(images["sample"])
    strict = cellseg_monai.load_bundle("supervised_unet", device="cpu", min_size=10_000)  # larger than any nucleus here
    assert labels.max() > 0 and strict.segment(images["sample"])[0].max() == 0


@pytest.mark.parametrize(
    "image, problem",
    [
        (np.zeros((7, 40, 40), np.uint8), "3D stack"),
        (np.zeros((40, 40), np.complex64), "dtype complex64"),
        (np.zeros((40, 40, 2), np.uint8), "2 channel(s)"),
        (np.zeros((0, 40), np.uint8), "empty image"),
        ([[1, 2], [3, 4]], "expected a NumPy array"),
    ],
)
def test_bad_images_are_one_line_data_errors(model, image, problem):
    with pytest.raises(DataError) as caught:
        model.segment(image)
    (line,), code = describe_error(caught.value)
    assert line.startswith("<array>: ") and problem in line and code == 1


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"bundle": "no_such_bundle"}, UsageError, ["--bundle", "impartial", "lacss"]),
        ({"bundle": "impartial", "prob_treshold": 0.4}, UsageError, ["--prob_treshold", "prob_threshold"]),
        ({"bundle": "impartial", "output_dir": "x"}, UsageError, ["--output_dir", "set by the command"]),
        ({"bundle": "impartial", "device": "cuda:99"}, UsageError, ["--device"]),
        ({"bundle": "impartial", "ckpt_path": "missing.pt"}, DataError, ["missing.pt", "does not exist"]),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_built(kwargs, error, words):
    with pytest.raises(error) as caught:
        cellseg_monai.load_bundle(**kwargs)
    (line,), _ = describe_error(caught.value)
    assert all(w in line for w in words), line


def test_weights_of_another_network_or_a_broken_file_are_one_line(tmp_path):
    import torch

    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    narrow = cellseg_monai.find_bundle("supervised_unet") / "models" / "model.pt"
    cases = [
        ({"ckpt_path": tmp_path / "empty.pt"}, "empty"),
        ({"ckpt_path": tmp_path / "other.pt"}, "weights of another network"),
        ({"ckpt_path": narrow}, "weights of another network"),  # the right file format, another bundle's network
    ]
    for kwargs, words in cases:
        with pytest.raises(DataError) as caught:
            cellseg_monai.load_bundle("impartial", device="cpu", **kwargs)
        (line,), code = describe_error(caught.value)
        assert line.startswith(str(kwargs["ckpt_path"])) and words in line and code == 1, line
