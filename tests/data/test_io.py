"""Tests of cellseg_monai.data.io against hand-made arrays written with tifffile/imageio."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from cellseg_monai.data.io import DataError, read_image, read_labels, write_labels

RNG = np.random.default_rng(0)
GREY16 = RNG.integers(0, 60000, (17, 23), dtype=np.uint16)
RGB8 = RNG.integers(0, 255, (17, 23, 3), dtype=np.uint8)
RGBA8 = RNG.integers(0, 255, (17, 23, 4), dtype=np.uint8)
FLOAT32 = RNG.random((17, 23)).astype(np.float32)


@pytest.mark.parametrize(
    "name, array, expected",
    [
        ("grey.tif", GREY16, GREY16),
        ("float.tiff", FLOAT32, FLOAT32),
        ("rgb.tif", RGB8, RGB8),
        ("planar.tif", np.moveaxis(RGB8, -1, 0), RGB8),  # (C, H, W) TIFF → (H, W, C)
        ("rgb.png", RGB8, RGB8),
        ("rgba.png", RGBA8, RGBA8),
        ("grey.png", RGB8[..., 0], RGB8[..., 0]),
    ],
)
def test_read_image_round_trip(tmp_path, name, array, expected):
    path = tmp_path / name
    if name.endswith((".tif", ".tiff")):
        tifffile.imwrite(path, array)
    else:
        iio.imwrite(path, array)
    out = read_image(path)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("broken.tif", b"II*\x00garbage-not-a-tiff" * 3, ["broken.tif", "cannot read"]),
        ("broken.png", b"\x89PNG\r\n\x1a\nxxxx", ["broken.png", "cannot read"]),
        ("empty.png", b"", ["empty.png"]),
    ],
)
def test_read_image_corrupt_file_names_file(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_image(path)
    for w in words:
        assert w in str(err.value)


def test_read_image_missing_and_stack(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "nope.tif")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((9, 16, 16), np.uint8))
    with pytest.raises(DataError, match=r"stack\.tif.*3D stack"):
        read_image(tmp_path / "stack.tif")


LAB = np.array([[0, 0, 3, 3], [1, 0, 3, 0], [1, 1, 0, 7]], dtype=np.uint16)


@pytest.mark.parametrize(
    "array",
    [
        LAB,
        LAB.astype(np.uint32),
        LAB.astype(np.int64),
        LAB.astype(np.float32),
        np.stack([LAB] * 3, -1).astype(np.uint8),
    ],
)
def test_read_labels_valid(tmp_path, array):
    tifffile.imwrite(tmp_path / "lab.tif", array)
    out = read_labels(tmp_path / "lab.tif")
    assert out.shape == LAB.shape and np.issubdtype(out.dtype, np.integer)
    np.testing.assert_array_equal(out, LAB)


@pytest.mark.parametrize(
    "array, words",
    [
        (LAB.astype(np.float32) + 0.5, ["not integral"]),
        (np.array([[0, -2], [1, 1]], np.int16), ["negative"]),
        (np.array([[0, 2**33], [1, 1]], np.int64), ["larger than uint32"]),
        (np.zeros((5, 6, 7), np.uint16), ["3D"]),
        (np.stack([LAB, LAB + 1, LAB], -1).astype(np.uint8), ["channels"]),
        (np.array([[0, np.nan], [1, 1]], np.float32), ["NaN"]),
    ],
)
def test_read_labels_invalid_names_file_and_problem(tmp_path, array, words):
    path = tmp_path / "bad_labels.tif"
    tifffile.imwrite(path, array)
    with pytest.raises(DataError) as err:
        read_labels(path)
    assert "bad_labels.tif" in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_read_labels_dsb_mask_folder(tmp_path):
    """Masks are painted in sorted file-name order with ids 1..N; empty masks are skipped."""
    masks = tmp_path / "abc" / "masks"
    masks.mkdir(parents=True)
    a = np.zeros((6, 8), np.uint8)
    a[0:2, 0:3] = 255
    b = np.zeros((6, 8), np.uint8)
    b[4:6, 5:8] = 255
    c = np.zeros((6, 8), np.uint8)
    c[3, 0] = 1
    iio.imwrite(masks / "b_second.png", b)
    iio.imwrite(masks / "a_first.png", a)
    iio.imwrite(masks / "c_third.png", c)
    iio.imwrite(masks / "d_empty.png", np.zeros((6, 8), np.uint8))
    (masks / "notes.txt").write_text("not a mask")
    expected = np.zeros((6, 8), np.int64)
    expected[0:2, 0:3] = 1
    expected[4:6, 5:8] = 2
    expected[3, 0] = 3
    np.testing.assert_array_equal(read_labels(masks), expected)


def test_read_labels_mask_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        read_labels(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    iio.imwrite(mixed / "a.png", np.ones((4, 4), np.uint8))
    iio.imwrite(mixed / "b.png", np.ones((5, 4), np.uint8))
    with pytest.raises(DataError, match=r"b\.png.*shape"):
        read_labels(mixed)


@pytest.mark.parametrize(
    "labels, dtype",
    [
        (LAB, np.uint16),
        (LAB[None].astype(np.int32), np.uint16),  # (1, H, W) is squeezed
        (np.array([[0, 70000], [1, 2]], np.int64), np.uint32),
    ],
)
def test_write_labels_dtype_and_compression(tmp_path, labels, dtype):
    path = tmp_path / "sub" / "out.tif"
    write_labels(path, labels)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        data = page.asarray()
    assert data.dtype == dtype
    np.testing.assert_array_equal(data, np.squeeze(labels))


def test_write_labels_rejects_bad(tmp_path):
    with pytest.raises(DataError, match="negative"):
        write_labels(tmp_path / "x.tif", np.array([[0, -1]]))
