from __future__ import annotations

import csv
import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
from monai.data import MetaTensor

from cellseg_monai.transforms.save_instances import SaveInstancesd

H, W = 24, 32


def hand_labels(big_ids: bool = False) -> np.ndarray:
    labels = np.zeros((H, W), np.int32)
    labels[2:8, 3:13] = 70000 if big_ids else 1  # 6 x 10 = 60 px
    labels[12:20, 15:19] = 2  # 8 x 4 = 32 px
    labels[14:17, 25:30] = 5  # 3 x 5 = 15 px
    return labels


AREAS = {1: 60, 2: 32, 5: 15}


def make_data(meta: dict, channels: int = 3, label_dtype: torch.dtype = torch.int32, big_ids: bool = False) -> dict:
    rng = np.random.default_rng(0)
    labels = hand_labels(big_ids)
    image = rng.uniform(0, 1000, (channels, H, W)).astype(np.float32)
    prob = np.where(labels > 0, 0.8, 0.1).astype(np.float32)[None]
    return {
        "image": MetaTensor(torch.from_numpy(image), meta=dict(meta)),
        "pred": MetaTensor(torch.from_numpy(labels[None]).to(label_dtype), meta=dict(meta)),
        "fg_prob": MetaTensor(torch.from_numpy(prob), meta=dict(meta)),
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("label_dtype", [torch.int32, torch.float32, torch.int64])
def test_writes_tif_png_csv(tmp_path: Path, channels: int, label_dtype: torch.dtype) -> None:
    data = make_data({"id": "img01", "filename_or_obj": "/x/other_name.tif"}, channels, label_dtype)
    out_dir = tmp_path / "new" / "predictions"
    result = SaveInstancesd(keys="pred", output_dir=str(out_dir))(data)
    assert result is data

    assert sorted(p.name for p in out_dir.iterdir()) == ["img01.csv", "img01.tif", "img01_overlay.png"]
    labels = tifffile.imread(out_dir / "img01.tif")
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, hand_labels())

    png = iio.imread(out_dir / "img01_overlay.png")
    assert png.shape == (H, W, 3) and png.dtype == np.uint8

    rows = read_csv(out_dir / "img01.csv")
    assert list(rows[0]) == ["id", "area", "centroid_y", "centroid_x", "mean_intensity", "score"]
    assert {int(r["id"]): int(r["area"]) for r in rows} == AREAS
    row1 = next(r for r in rows if r["id"] == "1")
    assert float(row1["centroid_y"]) == pytest.approx(4.5) and float(row1["centroid_x"]) == pytest.approx(7.5)
    assert all(float(r["score"]) == pytest.approx(0.8) for r in rows)
    image = data["image"].numpy()
    expected_mean = image[:, 2:8, 3:13].mean()
    assert float(row1["mean_intensity"]) == pytest.approx(expected_mean, rel=1e-5)


def test_overlay_draws_boundaries_only(tmp_path: Path) -> None:
    data = make_data({"id": "a"})
    SaveInstancesd(output_dir=tmp_path, image_key=None, prob_key=None, measurements=False)(data)
    png = iio.imread(tmp_path / "a_overlay.png")
    assert png[2, 3].any() and png[7, 12].any() and png[2, 8].any()  # corners and top edge of object 1: coloured
    assert not png[4, 7].any() and not png[0, 0].any()  # interior and background: black (no image)
    assert not (tmp_path / "a.csv").exists()


def test_id_falls_back_to_filename_stem_and_no_prob_gives_score_one(tmp_path: Path) -> None:
    data = make_data({"filename_or_obj": "/data/images/sample_7.tif"})
    del data["fg_prob"]
    SaveInstancesd(output_dir=tmp_path, overlay=False)(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample_7.csv", "sample_7.tif"]
    assert all(float(r["score"]) == 1.0 for r in read_csv(tmp_path / "sample_7.csv"))


def test_large_ids_are_written_as_uint32(tmp_path: Path) -> None:
    SaveInstancesd(output_dir=tmp_path, overlay=False, measurements=False)(make_data({"id": "big"}, big_ids=True))
    labels = tifffile.imread(tmp_path / "big.tif")
    assert labels.dtype == np.uint32
    np.testing.assert_array_equal(labels, hand_labels(big_ids=True))


def test_logs_one_line_per_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    saver = SaveInstancesd(output_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="cellseg_monai.transforms.save_instances"):
        for name in ("one", "two"):
            saver(make_data({"id": name}))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("one: 3 objects") and lines[1].startswith("two: 3 objects")


def test_size_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    data = make_data({"id": "bad"})
    data["image"] = MetaTensor(torch.zeros(3, H + 1, W))
    with pytest.raises(ValueError, match="bad: labels are 24x32"):
        SaveInstancesd(output_dir=tmp_path)(data)
    assert not (tmp_path / "bad.tif").exists()


@pytest.mark.parametrize(
    "mutate,error,match",
    [
        (lambda d: d.update(pred=MetaTensor(d["pred"][0])), ValueError, r"\(1, H, W\)"),
        (lambda d: d.update(pred=MetaTensor(d["pred"].float() + 0.5, meta={"id": "z"})), ValueError, "non-integer"),
        (lambda d: d.update(fg_prob=torch.zeros(1, H, W + 2)), ValueError, "fg_prob"),
        (lambda d: d.update(image="/path/not/loaded.tif"), TypeError, "image"),
    ],
)
def test_bad_inputs(tmp_path: Path, mutate, error: type, match: str) -> None:
    data = make_data({"id": "z"})
    mutate(data)
    with pytest.raises(error, match=match):
        SaveInstancesd(output_dir=tmp_path)(data)


@pytest.mark.parametrize("meta", [{}, {"id": "../escape"}])
def test_unusable_id(tmp_path: Path, meta: dict) -> None:
    data = make_data(meta)
    with pytest.raises(ValueError):
        SaveInstancesd(output_dir=tmp_path)(data)


def test_one_key_only() -> None:
    with pytest.raises(ValueError, match="one label image"):
        SaveInstancesd(keys=["pred", "label"], output_dir="unused")


def test_attributes_become_csv_columns(tmp_path):
    labels = np.zeros((1, 10, 12), np.int32)
    labels[0, 1:4, 1:4], labels[0, 6:9, 5:11] = 1, 2
    attrs = np.zeros((2, 10, 12), np.float32)
    attrs[0][labels[0] == 1], attrs[1][labels[0] == 1] = 0.9, 2.5
    attrs[0][labels[0] == 2], attrs[1][labels[0] == 2] = 0.6, -1.0
    data = {"pred": MetaTensor(labels, meta={"id": "a"}), "attributes": torch.as_tensor(attrs)}
    SaveInstancesd("pred", tmp_path, image_key=None, prob_key=None, attributes_key="attributes",
                   attribute_names=["presence", "x"])(data)  # fmt: skip
    with open(tmp_path / "a.csv") as f:
        rows = {int(r["id"]): r for r in csv.DictReader(f)}
    assert float(rows[1]["presence"]) == pytest.approx(0.9) and float(rows[1]["x"]) == 2.5
    assert float(rows[2]["presence"]) == pytest.approx(0.6) and float(rows[2]["x"]) == -1.0
    with pytest.raises(ValueError, match="attribute_names"):
        SaveInstancesd("pred", tmp_path, attributes_key="attributes", attribute_names=["x", "x"])


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (300, 2)])
def test_write_png_rgb_round_trips_through_an_independent_reader(tmp_path: Path, shape: tuple[int, int]) -> None:
    from cellseg_monai.transforms.save_instances import write_png_rgb

    rgb = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    write_png_rgb(tmp_path / "x.png", rgb)
    np.testing.assert_array_equal(iio.imread(tmp_path / "x.png"), rgb)  # Pillow decodes it bit-exactly


def test_write_png_rgb_compressed_in_row_blocks_round_trips(tmp_path: Path, monkeypatch) -> None:
    import cellseg_monai.transforms.save_instances as module

    monkeypatch.setattr(module, "_BLOCK_PIXELS", 50)  # blocks of one or a few rows
    rgb = np.random.default_rng(3).integers(0, 256, (41, 9, 3), dtype=np.uint8)
    module.write_png_rgb(tmp_path / "x.png", rgb)
    np.testing.assert_array_equal(iio.imread(tmp_path / "x.png"), rgb)


def test_write_png_rgb_rejects_what_it_cannot_write(tmp_path: Path) -> None:
    from cellseg_monai.transforms.save_instances import write_png_rgb

    with pytest.raises(ValueError, match=r"x\.png: expected an \(H, W, 3\) uint8 image"):
        write_png_rgb(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    assert not (tmp_path / "x.png").exists()


def test_overlay_display_range_of_a_large_image_matches_the_exact_percentiles() -> None:
    from cellseg_monai.transforms.save_instances import instance_overlay

    rng = np.random.default_rng(2)
    image = rng.gamma(2.0, 300.0, (3, 1100, 1300)).astype(np.float32)  # large enough to be sampled
    labels = np.zeros((1100, 1300), np.int32)
    lo, hi = np.percentile(image.astype(np.float64), [1.0, 99.8])
    exact = np.round(np.clip((image - lo) / (hi - lo), 0, 1) * 255).astype(np.int16)
    got = instance_overlay(labels, image).astype(np.int16)
    assert np.abs(np.moveaxis(got, -1, 0) - exact).max() <= 2  # a display difference of at most 2 grey levels


@pytest.mark.parametrize("block_pixels", [1 << 20, 997, 300])
def test_overlay_drawn_in_row_blocks_marks_the_whole_image_boundaries(monkeypatch, block_pixels: int) -> None:
    from skimage.segmentation import find_boundaries

    import cellseg_monai.transforms.save_instances as module

    monkeypatch.setattr(module, "_BLOCK_PIXELS", block_pixels)  # many blocks of a few rows each
    labels = np.zeros((61, 50), np.int32)
    labels[5:30, 3:20], labels[28:60, 10:45], labels[0:3, 40:50] = 1, 2, 3  # objects across block borders
    grey = np.full((61, 50), 7.0, np.float32)  # constant image: black background (0) everywhere
    got = module.instance_overlay(labels, grey)
    boundary = find_boundaries(labels, mode="inner") & (labels > 0)  # skimage on the whole image
    np.testing.assert_array_equal(got.any(axis=-1), boundary)
    for k in (1, 2, 3):  # one colour per object
        assert len(np.unique(got[labels == k][boundary[labels == k]], axis=0)) == 1
