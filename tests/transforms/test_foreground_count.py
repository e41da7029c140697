"""ForegroundCountd (weak label of a patch) and SplitInstanceOutputd (stitched output → labels, score, attributes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, SpatialCropd

from cellseg_monai.transforms import ForegroundCountd, SplitInstanceOutputd


def _labels() -> np.ndarray:
    lab = np.zeros((1, 40, 40), np.int32)
    lab[0, 2:8, 2:8] = 3  # wholly inside the crop below
    lab[0, 15:25, 15:25] = 7  # cut by the crop border: still counts
    lab[0, 30:38, 30:38] = 9  # outside the crop
    return lab


@pytest.mark.parametrize(
    "roi_start, roi_end, count",
    [((0, 0), (40, 40), 3), ((0, 0), (20, 20), 2), ((30, 0), (40, 10), 0), ((24, 24), (40, 40), 2)],
)
def test_count_is_objects_with_a_pixel_in_the_patch(roi_start, roi_end, count):
    lab = _labels()
    crop = SpatialCropd("label", roi_start=roi_start, roi_end=roi_end)
    out = Compose([crop, ForegroundCountd("label", "mask", "count")])({"label": MetaTensor(torch.as_tensor(lab))})
    (r0, c0), (r1, c1) = roi_start, roi_end
    expected_mask = (lab[:, r0:r1, c0:c1] > 0).astype(np.float32)
    np.testing.assert_array_equal(out["mask"].numpy(), expected_mask)
    assert out["mask"].dtype == torch.float32 and out["count"].tolist() == [float(count)]


def test_foreground_count_rejects_a_multichannel_label():
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        ForegroundCountd("label")({"label": torch.zeros(2, 8, 8)})


def test_split_instance_output():
    out = torch.zeros(4, 6, 5)
    out[0, 1:3, 1:3], out[1, 1:3, 1:3], out[2, 1:3, 1:3], out[3, 1:3, 1:3] = 1, 0.8, 10.0, -2.0
    out[0, 4, 4], out[1, 4, 4] = 2, 0.6
    meta = {"id": "x", "filename_or_obj": "x.tif"}
    d = SplitInstanceOutputd("pred")({"pred": MetaTensor(out, meta=meta)})
    assert d["pred"].dtype == torch.int32 and d["pred"].shape == (1, 6, 5)
    np.testing.assert_array_equal(d["pred"].numpy(), out[:1].numpy())
    np.testing.assert_array_equal(d["fg"].numpy(), (out[:1] > 0).float().numpy())
    np.testing.assert_allclose(d["score"].numpy(), out[1:2].numpy())
    np.testing.assert_allclose(d["attributes"].numpy(), out[2:].numpy())
    assert d["pred"].meta["id"] == "x" and d["attributes"].meta["id"] == "x"


def test_split_instance_output_needs_two_channels():
    with pytest.raises(ValueError, match="2 \\+ F"):
        SplitInstanceOutputd("pred")({"pred": torch.zeros(1, 4, 4)})
