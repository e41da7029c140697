from __future__ import annotations

import torch
from monai.data import MetaTensor

from cellseg_monai.handlers import meta_of


def test_decollated_list_gives_one_meta_per_item():
    batch = [{"image": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": f"/d/{i}.tif"})} for i in range(3)]
    assert [m["filename_or_obj"] for m in meta_of("image")(batch)] == ["/d/0.tif", "/d/1.tif", "/d/2.tif"]


def test_collated_batch_is_split_per_image():
    image = MetaTensor(torch.zeros(2, 1, 2, 2), meta={"filename_or_obj": ["a.tif", "b.tif"], "id": ["a", "b"]})
    metas = meta_of("image")({"image": image})
    assert [m["filename_or_obj"] for m in metas] == ["a.tif", "b.tif"]
    assert [m["id"] for m in metas] == ["a", "b"]


def test_plain_tensor_gives_empty_meta():
    assert meta_of("image")([{"image": torch.zeros(1)}]) == [{}]
