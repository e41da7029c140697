"""Tests of cellseg_monai.transforms.checks (RequireFinite, RequireFinited) on hand-made arrays and files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from cellseg_monai.data.io import DataError
from cellseg_monai.transforms.checks import RequireFinite, RequireFinited
from cellseg_monai.transforms.io import LoadMicroscopyd

FLOAT = np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 3, 4)


def _with(value: float, count: int) -> np.ndarray:
    a = FLOAT.copy()
    a.flat[:count] = value
    return a


@pytest.mark.parametrize(
    "img, bad",
    [
        (FLOAT, 0),
        (np.arange(12, dtype=np.uint16).reshape(1, 3, 4), 0),  # integers are always finite
        (torch.from_numpy(FLOAT), 0),
        (_with(np.nan, 1), 1),
        (_with(np.inf, 2), 2),
        (torch.from_numpy(_with(-np.inf, 12)), 12),
    ],
)
def test_require_finite_counts_the_values_that_are_not(img, bad):
    if bad == 0:
        assert RequireFinite()(img) is img
    else:
        with pytest.raises(DataError, match=rf"^<array>: image has {bad} NaN or infinite value\(s\) \(of 12\);"):
            RequireFinite()(img)


def test_the_dictionary_transform_names_the_loaded_file(tmp_path):
    good, bad = tmp_path / "good.tif", tmp_path / "bad.tif"
    tifffile.imwrite(good, FLOAT[0])
    tifffile.imwrite(bad, _with(np.nan, 3)[0])
    chain = [LoadMicroscopyd(keys="image", kind="image"), RequireFinited(keys="image")]

    def run(path):
        d = {"image": str(path)}
        for t in chain:
            d = t(d)
        return d

    assert torch.equal(run(good)["image"].as_tensor(), torch.from_numpy(FLOAT))
    with pytest.raises(DataError) as info:
        run(bad)
    assert str(info.value).startswith(f"{bad}: image has 3 NaN or infinite value(s) (of 12);")
