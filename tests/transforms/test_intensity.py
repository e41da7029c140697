from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cellseg_monai.transforms import NormalizePolarity, NormalizePolarityd


def _discs(bright_nuclei: bool, channels: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    nuclei = np.zeros((64, 64), bool)
    for cy, cx in [(15, 15), (40, 20), (25, 45), (50, 50)]:
        nuclei |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
    grey = np.where(nuclei, 0.9, 0.1) if bright_nuclei else np.where(nuclei, 0.2, 0.8)
    return np.repeat(grey[None], channels, axis=0).astype(np.float32)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_dark_nuclei_are_inverted_within_each_channel_range(as_tensor):
    image = _discs(bright_nuclei=False)
    image[1] *= 0.5  # a channel with another range is mirrored within its own range
    x = torch.as_tensor(image) if as_tensor else image
    out = np.asarray(NormalizePolarity()(x))
    expected = image.min(axis=(1, 2), keepdims=True) + image.max(axis=(1, 2), keepdims=True) - image
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[0, 15, 15] > out[0, 0, 0]  # nuclei now brighter than the background


def test_bright_nuclei_are_left_alone():
    image = _discs(bright_nuclei=True)
    np.testing.assert_array_equal(NormalizePolarity()(image), image)


@pytest.mark.parametrize("mode, inverted", [("dark", True), ("bright", False), ("none", False)])
def test_forced_modes(mode, inverted):
    image = _discs(bright_nuclei=True, channels=1)
    out = NormalizePolarity(mode)(image)
    np.testing.assert_allclose(out, 1.0 - image if inverted else image, atol=1e-6)


def test_dict_version_records_the_decision():
    data = {"image": MetaTensor(torch.as_tensor(_discs(bright_nuclei=False))), "label": 7}
    out = NormalizePolarityd("image")(data)
    assert out["image"].meta["polarity_inverted"] is True
    assert out["label"] == 7


def test_bad_input():
    with pytest.raises(ValueError, match="polarity"):
        NormalizePolarity("upside-down")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        NormalizePolarity()(np.zeros((4, 4)))
