"""Tests of the embedded sample data (cellseg_monai/data/sample/) and of its builder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellseg_monai.data.layouts import load_datalist
from cellseg_monai.data.sample import make_sample_data, sample_data_dir

SRC = Path(__file__).resolve().parents[3] / "shared" / "data" / "bbbc038"


def test_sample_loads_and_is_valid():
    root = Path(sample_data_dir())
    split = json.loads((root / "split.json").read_text())
    assert len(split["train"]) >= 4 and len(split["val"]) >= 2
    assert not set(split["train"]) & set(split["val"])
    for name in ("train", "val"):
        dl = load_datalist(root, name)
        assert [d["id"] for d in dl] == split[name]
        for d in dl:
            img = tifffile.imread(d["image"])
            lab = tifffile.imread(d["label"])
            assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
            assert lab.dtype == np.uint16 and lab.shape == img.shape[:2]
            ids = np.unique(lab)
            assert ids[0] == 0 and len(ids) >= 2, f"{d['label']} has no object"
            np.testing.assert_array_equal(ids[1:], np.arange(1, len(ids)))  # relabelled 1..N
    is_grey = [
        bool(np.ptp(im.astype(int), axis=-1).max() == 0) for im in map(tifffile.imread, (root / "images").glob("*.tif"))
    ]
    assert sum(is_grey) >= 4 and len(is_grey) - sum(is_grey) >= 2  # grey fluorescence and colour (H&E) images


def test_sample_size_and_source():
    root = Path(sample_data_dir())
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert total < 2_000_000
    text = (root / "SOURCE.md").read_text()
    assert "CC0" in text and "BBBC038" in text and "python -m cellseg_monai.data.sample" in text


@pytest.mark.skipif(not SRC.is_dir(), reason="../shared/data/bbbc038 not available")
def test_sample_crops_match_source_and_rebuild_is_identical(tmp_path):
    root = Path(sample_data_dir())
    rows = re.findall(
        r"\| `(\w+)` \| \w+ \| \w+ \| `(\w+)` \| \S+ \| y (\d+):(\d+), x (\d+):(\d+) \|",
        (root / "SOURCE.md").read_text(),
    )
    assert len(rows) == len(list((root / "images").glob("*.tif")))
    for short, orig, y0, y1, x0, x1 in rows:
        y0, y1, x0, x1 = map(int, (y0, y1, x0, x1))
        src_img = tifffile.imread(SRC / "images" / f"{orig}.tif")
        np.testing.assert_array_equal(tifffile.imread(root / "images" / f"{short}.tif"), src_img[y0:y1, x0:x1])
        src_lab = tifffile.imread(SRC / "labels" / f"{orig}.tif")[y0:y1, x0:x1]
        lab = tifffile.imread(root / "labels" / f"{short}.tif")
        # same partition: the map source id -> sample id is one-to-one and 0 -> 0
        pairs = set(zip(src_lab.ravel().tolist(), lab.ravel().tolist(), strict=True))
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
        assert (0, 0) in pairs
    make_sample_data(SRC, tmp_path / "rebuilt")
    for f in root.rglob("*.tif"):
        np.testing.assert_array_equal(tifffile.imread(f), tifffile.imread(tmp_path / "rebuilt" / f.relative_to(root)))
    assert (tmp_path / "rebuilt" / "split.json").read_text() == (root / "split.json").read_text()
