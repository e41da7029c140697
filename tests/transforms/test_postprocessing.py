from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cellseg_monai.transforms.postprocessing import ProbabilityToInstances, ProbabilityToInstancesd

SHAPE = (40, 60)


def touching_discs() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (yy - 20) ** 2 + (xx - 20) ** 2 <= 100, (yy - 20) ** 2 + (xx - 37) ** 2 <= 100


def prob_map() -> np.ndarray:
    a, b = touching_discs()
    return ((a | b) * 0.9 + 0.05)[None].astype(np.float32)  # (1, H, W)


@pytest.mark.parametrize("watershed,n", [(True, 2), (False, 1)])
@pytest.mark.parametrize("kind", ["metatensor", "tensor", "numpy"])
def test_array_transform(watershed: bool, n: int, kind: str) -> None:
    prob = prob_map()
    if kind == "metatensor":
        prob = MetaTensor(torch.from_numpy(prob), meta={"id": "img3", "filename_or_obj": "/data/img3.tif"})
    elif kind == "tensor":
        prob = torch.from_numpy(prob)
    out = ProbabilityToInstances(watershed=watershed)(prob)
    assert isinstance(out, MetaTensor)
    assert out.shape == (1, *SHAPE) and out.dtype == torch.int32
    a, b = touching_discs()
    np.testing.assert_array_equal(out[0].numpy() > 0, a | b)
    assert int(out.max()) == n
    if kind == "metatensor":
        assert out.meta["id"] == "img3" and out.meta["filename_or_obj"] == "/data/img3.tif"
        out.meta["id"] = "changed"
        assert prob.meta["id"] == "img3"  # meta is copied, not shared


@pytest.mark.parametrize("shape", [SHAPE, (2, *SHAPE), (1, 1, *SHAPE)])
def test_array_transform_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        ProbabilityToInstances()(torch.zeros(shape))


def test_dict_transform_defaults_fg_prob_to_pred() -> None:
    prob = MetaTensor(torch.from_numpy(prob_map()), meta={"id": "x"})
    data = {"fg_prob": prob, "image": torch.zeros(3, *SHAPE)}
    out = ProbabilityToInstancesd()(data)
    assert set(out) == {"fg_prob", "image", "pred"}
    assert out["fg_prob"] is prob and "pred" not in data
    assert out["pred"].meta["id"] == "x"
    assert out["pred"].shape == (1, *SHAPE) and int(out["pred"].max()) == 2


@pytest.mark.parametrize("output_key,written", [(None, "fg_prob"), ("labels", "labels"), (["labels"], "labels")])
def test_dict_transform_output_key(output_key: str | list[str] | None, written: str) -> None:
    out = ProbabilityToInstancesd(keys="fg_prob", output_key=output_key)({"fg_prob": torch.from_numpy(prob_map())})
    assert out[written].dtype == torch.int32 and int(out[written].max()) == 2


def test_dict_transform_key_count_mismatch() -> None:
    with pytest.raises(ValueError, match="one output key per key"):
        ProbabilityToInstancesd(keys=["a", "b"], output_key="pred")
