"""LACSS weak-label transforms: point maps (round trip, through MONAI spatial transforms) and foreground masks."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, RandFlipd, RandRotate90d, RandSpatialCropd, SpatialCropd, SpatialPadd
from scipy import ndimage as ndi

from cellseg_monai.data.io import DataError
from cellseg_monai.transforms.points import (
    CutOffPointsd,
    DetectPointsd,
    ForegroundMaskd,
    LoadPointsd,
    MakePointsd,
    SimulatePointsd,
    ThresholdMask,
    map_to_points,
    points_to_map,
)


def _labels() -> MetaTensor:
    lab = np.zeros((1, 24, 32), np.int32)
    lab[0, 2:7, 3:8] = 5  # centroid (4, 5)
    lab[0, 12:15, 20:29] = 2  # centroid (13, 24)
    return MetaTensor(torch.as_tensor(lab), meta={"id": "s1"})


@pytest.mark.parametrize(
    "points,ids,expected_pts,expected_ids",
    [
        ([[1.2, 2.7], [5.0, 0.0]], None, [[1, 3], [5, 0]], [1, 2]),
        ([[1.0, 1.0], [3.0, 3.0]], [7, 4], [[3, 3], [1, 1]], [4, 7]),  # returned in id order
        ([[1.0, 1.0], [30.0, 3.0]], None, [[1, 1]], [1]),  # outside the image: dropped
    ],
)
def test_point_map_round_trip(points, ids, expected_pts, expected_ids):
    pmap = points_to_map(np.array(points), (8, 8), None if ids is None else np.array(ids))
    assert pmap.dtype == np.int32 and pmap.shape == (8, 8)
    pts, got_ids = map_to_points(pmap[None])
    np.testing.assert_array_equal(pts, expected_pts)
    np.testing.assert_array_equal(got_ids, expected_ids)


def test_simulate_points_d_marks_centroids_with_instance_ids():
    out = SimulatePointsd("label", "points")({"label": _labels(), "id": "s1"})
    pmap = out["points"]
    assert isinstance(pmap, MetaTensor) and pmap.shape == (1, 24, 32)
    assert pmap[0, 4, 5] == 5 and pmap[0, 13, 24] == 2 and int((pmap > 0).sum()) == 2


def test_points_follow_monai_spatial_transforms():
    # each point sits on a unique bright pixel; after random crops/flips/rotations the map must still mark them
    rng = np.random.default_rng(0)
    pts = np.array([[3, 4], [10, 20], [17, 5], [12, 12]], float)
    image = np.zeros((1, 20, 24), np.float32)
    image[0, pts[:, 0].astype(int), pts[:, 1].astype(int)] = np.arange(1, 5)
    keys = ["image", "points"]
    tf = Compose(
        [
            SpatialPadd(keys, (24, 24)),
            RandSpatialCropd(keys, (16, 16), random_size=False),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandRotate90d(keys, prob=0.5),
        ]
    )
    tf.set_random_state(seed=int(rng.integers(1000)))
    for _ in range(10):
        d = tf({"image": torch.as_tensor(image), "points": torch.as_tensor(points_to_map(pts, (20, 24))[None])})
        got, ids = map_to_points(d["points"])
        img = np.asarray(d["image"][0])
        for (y, x), i in zip(got.astype(int), ids, strict=True):
            assert img[y, x] == i  # the point still sits on its own marker pixel
        assert sorted(ids.tolist()) == sorted(img[img > 0].astype(int).tolist())


def test_detect_points_d_on_blobs():
    yy, xx = np.mgrid[:40, :40]
    img = np.exp(-((yy - 10) ** 2 + (xx - 30) ** 2) / 8.0) + np.exp(-((yy - 30) ** 2 + (xx - 8) ** 2) / 8.0)
    out = DetectPointsd("image", "points", channel=0, sigma_small=2.0, sigma_large=4.0)({"image": img[None]})
    pts, ids = map_to_points(out["points"])
    np.testing.assert_array_equal(pts, [[10, 30], [30, 8]])
    np.testing.assert_array_equal(ids, [1, 2])


def test_load_points_d_from_dataset_and_path(tmp_path):
    (tmp_path / "weak" / "points").mkdir(parents=True)
    (tmp_path / "weak" / "points" / "a.csv").write_text("y,x\n2,3\n5.4,1.6\n")
    image = torch.zeros(3, 8, 8)
    out = LoadPointsd("points", "image", dataset_dir=str(tmp_path))({"image": image, "id": "a"})
    np.testing.assert_array_equal(map_to_points(out["points"])[0], [[2, 3], [5, 2]])
    out = LoadPointsd("points", "image")({"image": image, "points": str(tmp_path / "weak" / "points" / "a.csv")})
    assert int((out["points"] > 0).sum()) == 2
    with pytest.raises(DataError, match="b.csv"):
        LoadPointsd("points", "image", dataset_dir=str(tmp_path))({"image": image, "id": "b"})
    (tmp_path / "weak" / "points" / "c.csv").write_text("y,x\n20,3\n")
    with pytest.raises(DataError, match="outside"):
        LoadPointsd("points", "image", dataset_dir=str(tmp_path))({"image": image, "id": "c"})


@pytest.mark.parametrize("source", ["simulate", "detect", "files"])
def test_make_points_d_dispatch(tmp_path, source):
    (tmp_path / "weak" / "points").mkdir(parents=True)
    (tmp_path / "weak" / "points" / "s1.csv").write_text("y,x\n4,5\n")
    image = torch.zeros(1, 24, 32)
    image[0, 3:6, 4:7] = 1.0
    data = {"image": image, "label": _labels(), "id": "s1"}
    out = MakePointsd(source, dataset_dir=str(tmp_path), detect={"channel": 0, "sigma_small": 1.0, "sigma_large": 2.0})(
        data
    )
    pts, _ = map_to_points(out["points"])
    assert [4.0, 5.0] in pts.tolist()


def test_make_points_d_bad_source():
    with pytest.raises(ValueError, match="source"):
        MakePointsd("oracle")
    with pytest.raises(ValueError, match="dataset_dir"):
        MakePointsd("files")


def test_simulated_clicks_on_a_fraction_of_the_cells():
    # 10 cells in a row; 0.3 of them → ceil(3) clicked, at their centroids, the same cells partial Mask R-CNN keeps
    from cellseg_monai.annotations.partial import kept_ids

    lab = np.zeros((1, 12, 100), np.int32)
    for i in range(10):
        lab[0, 4:8, 10 * i + 2 : 10 * i + 6] = i + 1  # centroid (5.5, 10i + 3.5)
    label = MetaTensor(torch.as_tensor(lab), meta={"id": "row"})
    out = SimulatePointsd("label", fraction=0.3, seed=4)({"label": label, "id": "row"})
    pts, ids = map_to_points(out["points"])
    expected = kept_ids(lab[0], "row", seed=4, fraction=0.3)
    assert len(ids) == 3 and ids.tolist() == expected.tolist()
    np.testing.assert_array_equal(pts, [[6, round(10 * (i - 1) + 3.5)] for i in expected])  # rounded centroids
    again = SimulatePointsd("label", fraction=0.3, seed=4)({"label": label, "id": "row"})["points"]
    assert torch.equal(torch.as_tensor(again), torch.as_tensor(out["points"]))  # same cells in every epoch
    everyone = SimulatePointsd("label", fraction=1.0)({"label": label, "id": "row"})["points"]
    assert map_to_points(everyone)[1].tolist() == list(range(1, 11))
    with pytest.raises(ValueError, match="fraction"):
        SimulatePointsd("label", fraction=0.0)
    with pytest.raises(ValueError, match="simulate"):
        MakePointsd("detect", fraction=0.5)
    with pytest.raises(ValueError, match="sample id"):
        SimulatePointsd("label", fraction=0.5)({"label": torch.as_tensor(lab)})


def test_foreground_mask_sources(tmp_path):
    lab = _labels()
    image = torch.full((3, 24, 32), 0.1)
    image[:, 12:15, 20:29] = 0.9
    (tmp_path / "weak" / "masks").mkdir(parents=True)
    user = np.zeros((24, 32), np.uint8)
    user[0:3, 0:3] = 1
    tifffile.imwrite(tmp_path / "weak" / "masks" / "s1.tif", user)
    data = {"image": image, "label": lab, "id": "s1"}
    m = ForegroundMaskd("labels")(data)["fg_mask"]
    np.testing.assert_array_equal(np.asarray(m), (np.asarray(lab) > 0).astype(np.uint8))
    m = ForegroundMaskd("threshold")(data)["fg_mask"]
    np.testing.assert_array_equal(np.asarray(m)[0], (np.asarray(image[0]) > 0.5).astype(np.uint8))
    m = ForegroundMaskd("files", dataset_dir=str(tmp_path))(data)["fg_mask"]
    np.testing.assert_array_equal(np.asarray(m)[0], user)
    with pytest.raises(DataError, match="s1"):
        ForegroundMaskd("files", dataset_dir=str(tmp_path))({"image": torch.zeros(1, 5, 5), "id": "s1"})
    with pytest.raises(ValueError):
        ForegroundMaskd("magic")


def test_threshold_mask_fixed_threshold_on_one_channel():
    image = torch.zeros(2, 4, 4)
    image[1, 0, 0] = 0.7
    np.testing.assert_array_equal(np.asarray(ThresholdMask(channel=1, threshold=0.5)(image))[0, 0], [1, 0, 0, 0])


@pytest.mark.parametrize("foreground_only,expected", [(True, [[10, 10]]), (False, [[10, 10], [30, 30]])])
def test_detect_points_foreground_only_drops_faint_maxima(foreground_only, expected):
    yy, xx = np.mgrid[:40, :40]
    img = np.exp(-((yy - 10) ** 2 + (xx - 10) ** 2) / 8.0) + 0.15 * np.exp(-((yy - 30) ** 2 + (xx - 30) ** 2) / 8.0)
    out = DetectPointsd(
        "image", "points", channel=0, sigma_small=2.0, sigma_large=4.0, threshold=0.001, foreground_only=foreground_only
    )({"image": img[None]})
    np.testing.assert_array_equal(map_to_points(out["points"])[0], expected)


def test_cut_off_points_d_clicks_the_cell_a_crop_cut_from_its_click():
    data = SimulatePointsd("label")({"label": _labels()})
    data["fg_mask"] = (data["label"] > 0).to(torch.uint8)
    # rows 5..23: cell 5 (rows 2..6) keeps rows 5-6 in the crop, its centroid (4, 5) falls outside
    crop = SpatialCropd(["label", "points", "fg_mask"], roi_start=(5, 0), roi_end=(24, 32))(data)
    assert map_to_points(crop["points"])[1].tolist() == [2]  # only cell 2 kept its click
    out = CutOffPointsd("points", mask_key="fg_mask")(crop)
    pts, ids = map_to_points(out["points"])
    visible = ndi.center_of_mass(crop["label"][0].numpy() == 5)  # (0.5, 5.0): the truth's point for a cut cell
    assert ids.tolist() == [2, 3]  # the new click gets the next free id
    assert np.array_equal(pts[1], np.round(visible))
    assert np.array_equal(pts[0], [8.0, 24.0])  # cell 2's click (13, 24) did not move
    assert isinstance(out["points"], MetaTensor) and out["points"].dtype == crop["points"].dtype
    assert out["points"].shape == crop["points"].shape
    # a fully clicked crop is left as it is
    again = CutOffPointsd("points", mask_key="fg_mask")(out)
    assert torch.equal(again["points"], out["points"])


def test_cut_off_points_d_size_mismatch():
    data = {"points": torch.zeros(1, 8, 8, dtype=torch.int32), "fg_mask": torch.ones(1, 8, 9)}
    with pytest.raises(ValueError, match="differ in size"):
        CutOffPointsd("points")(data)
