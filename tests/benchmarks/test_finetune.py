"""benchmarks/finetune.py: modality split by pixels, subset folders in the standard layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from benchmarks.finetune import make_subset, modality, split_by_modality


def _nuclei(bright: bool) -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    img = np.full((64, 64), 20, np.uint8)
    for cy, cx in ((16, 16), (40, 44), (50, 14)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 200
    return img if bright else 255 - img


def test_modality_by_hand() -> None:
    assert modality(_nuclei(True)) == "fluorescence"
    assert modality(np.repeat(_nuclei(True)[..., None], 3, axis=-1)) == "fluorescence"  # grey stored as RGB
    assert modality(_nuclei(False)) == "shifted"  # brightfield: dark nuclei
    colour = np.stack([_nuclei(True), _nuclei(True) // 2, _nuclei(True)], axis=-1)
    assert modality(colour) == "shifted"  # H&E-like: channels differ


def test_split_and_subset(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    images = {"a": _nuclei(True), "b": _nuclei(False), "c": _nuclei(True), "d": _nuclei(False)}
    for i, img in images.items():
        tifffile.imwrite(data / "images" / f"{i}.tif", img)
        tifffile.imwrite(data / "labels" / f"{i}.tif", (img > 100).astype(np.uint16))
    (data / "split.json").write_text(json.dumps({"train": ["a", "b"], "val": ["c", "d"]}))
    ids = split_by_modality(data)
    assert ids == {"fluorescence": {"train": ["a"], "val": ["c"]}, "shifted": {"train": ["b"], "val": ["d"]}}
    out = make_subset(data, tmp_path / "fluo", ids["fluorescence"])
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.tif", "c.tif"]
    assert (out / "labels" / "c.tif").resolve() == (data / "labels" / "c.tif").resolve()
    assert json.loads((out / "split.json").read_text()) == {"train": ["a"], "val": ["c"]}
    make_subset(data, out, ids["shifted"])  # rebuilt, not mixed
    assert sorted(p.name for p in (out / "images").iterdir()) == ["b.tif", "d.tif"]
