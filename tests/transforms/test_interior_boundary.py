from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from skimage.segmentation import find_boundaries

from cellseg_monai.transforms.interior_boundary import (
    InstancesToInteriorBoundary,
    InstancesToInteriorBoundaryd,
    InteriorBoundaryToInstances,
    InteriorBoundaryToInstancesd,
    instances_to_interior_boundary,
)

# (labels, boundary_width, expected class map) -- written by hand: 0 background, 1 interior, 2 boundary
ENCODING_CASES = {
    # two touching 3x3 squares and a 2x2 object cut by the image corner (no boundary along the image border)
    "touching_and_border_w1": (
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 2, 2, 2, 0],
            [0, 1, 1, 1, 2, 2, 2, 0],
            [0, 1, 1, 1, 2, 2, 2, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 3, 3],
            [0, 0, 0, 0, 0, 0, 3, 3],
        ],
        1,
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 2, 2, 2, 2, 2, 2, 0],
            [0, 2, 1, 2, 2, 1, 2, 0],
            [0, 2, 2, 2, 2, 2, 2, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 2, 2],
            [0, 0, 0, 0, 0, 0, 2, 1],
        ],
    ),
    # two instances filling the image: a 2 px band on each side of the contact line
    "touching_w2": (
        [[1, 1, 1, 1, 1, 7, 7, 7, 7, 7]] * 3,
        2,
        [[1, 1, 1, 2, 2, 2, 2, 1, 1, 1]] * 3,
    ),
    # a background hole: boundary = city-block distance <= 2 (a diamond, not a square)
    "hole_w2_diamond": (
        [
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1],
            [1, 1, 0, 1, 1],
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1],
        ],
        2,
        [
            [1, 1, 2, 1, 1],
            [1, 2, 2, 2, 1],
            [2, 2, 0, 2, 2],
            [1, 2, 2, 2, 1],
            [1, 1, 2, 1, 1],
        ],
    ),
    # a 7x7 square in a 9x9 image: boundary ring 2 px wide, 3x3 interior
    "square_w2": (
        np.pad(np.full((7, 7), 4), 1).tolist(),
        2,
        np.pad(np.pad(np.ones((3, 3), int), 2, constant_values=2), 1).tolist(),
    ),
    "all_background": ([[0, 0], [0, 0]], 1, [[0, 0], [0, 0]]),
}


@pytest.mark.parametrize("name", sorted(ENCODING_CASES))
def test_encoding_matches_hand_made_arrays(name: str) -> None:
    labels, width, expected = ENCODING_CASES[name]
    out = instances_to_interior_boundary(np.array(labels, np.uint16), boundary_width=width)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, np.array(expected))


def random_discs(seed: int, shape: tuple[int, int] = (48, 56)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for k in range(1, 9):
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(3, 10)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)] = k  # later discs cut into earlier ones
    return labels


@pytest.mark.parametrize("seed", range(5))
def test_width_1_is_skimage_inner_boundary(seed: int) -> None:
    labels = random_discs(seed)
    out = instances_to_interior_boundary(labels, 1)
    np.testing.assert_array_equal(out == 2, find_boundaries(labels, connectivity=1, mode="inner"))
    np.testing.assert_array_equal(out > 0, labels > 0)


@pytest.mark.parametrize("kind", ["metatensor", "tensor", "numpy"])
def test_array_transform_keeps_container_and_meta(kind: str) -> None:
    labels, width, expected = ENCODING_CASES["touching_and_border_w1"]
    arr = np.array(labels, np.int32)[None]
    if kind == "metatensor":
        arr = MetaTensor(torch.from_numpy(arr), meta={"id": "img0"})
    elif kind == "tensor":
        arr = torch.from_numpy(arr)
    out = InstancesToInteriorBoundary(boundary_width=width)(arr)
    assert out.shape == (1, 7, 8)
    if kind == "numpy":
        assert isinstance(out, np.ndarray) and out.dtype == np.int64
    else:
        assert isinstance(out, torch.Tensor) and out.dtype == torch.int64
        assert isinstance(out, MetaTensor) == (kind == "metatensor")
    if kind == "metatensor":
        assert out.meta["id"] == "img0"
    np.testing.assert_array_equal(np.asarray(out)[0], np.array(expected))


def test_array_transform_accepts_integral_floats() -> None:
    labels = np.array(ENCODING_CASES["square_w2"][0], np.float32)[None]
    out = InstancesToInteriorBoundary(2)(torch.from_numpy(labels))
    np.testing.assert_array_equal(out[0].numpy(), np.array(ENCODING_CASES["square_w2"][2]))


@pytest.mark.parametrize(
    "labels,error,match",
    [
        (np.zeros((4, 4), np.int32), ValueError, r"\(1, H, W\)"),
        (np.zeros((2, 4, 4), np.int32), ValueError, r"\(1, H, W\)"),
        (np.full((1, 4, 4), 0.5, np.float32), TypeError, "integer"),
    ],
)
def test_array_transform_rejects_bad_input(labels: np.ndarray, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        InstancesToInteriorBoundary()(labels)


@pytest.mark.parametrize("width", [0, -1, 1.5, True])
def test_bad_boundary_width(width: object) -> None:
    with pytest.raises(ValueError, match="boundary_width"):
        InstancesToInteriorBoundary(boundary_width=width)  # type: ignore[arg-type]


@pytest.mark.parametrize("output_key,written", [(None, "label"), ("target", "target"), (["target"], "target")])
def test_dict_transform(output_key: str | list[str] | None, written: str) -> None:
    labels, _, expected = ENCODING_CASES["touching_and_border_w1"]
    data = {"label": torch.tensor(labels)[None], "image": torch.zeros(3, 7, 8)}
    out = InstancesToInteriorBoundaryd(keys="label", output_key=output_key)(data)
    np.testing.assert_array_equal(out[written][0].numpy(), np.array(expected))
    if written != "label":
        assert out["label"] is data["label"]  # the instance labels stay available


def test_dict_transform_output_key_count() -> None:
    with pytest.raises(ValueError, match="one output key per key"):
        InstancesToInteriorBoundaryd(keys=["a", "b"], output_key="c")


def one_hot(classes: np.ndarray) -> np.ndarray:
    return np.stack([classes == k for k in range(3)]).astype(np.float32)


# two touching 6x6 squares (each: 4x4 interior, 1 px boundary), a separate 5x5 square, background elsewhere
CLASSES = np.zeros((12, 22), np.int64)
CLASSES[1:7, 1:13] = 2
CLASSES[2:6, 2:6] = CLASSES[2:6, 8:12] = 1
CLASSES[6:11, 15:20] = 2
CLASSES[7:10, 16:19] = 1
EXPECTED = np.zeros((12, 22), np.int32)
EXPECTED[1:7, 1:7], EXPECTED[1:7, 7:13], EXPECTED[6:11, 15:20] = 1, 2, 3


@pytest.mark.parametrize("kind", ["metatensor", "tensor", "numpy"])
def test_decoding_transform(kind: str) -> None:
    prob = one_hot(CLASSES)
    if kind == "metatensor":
        prob = MetaTensor(torch.from_numpy(prob), meta={"id": "img7"})
    elif kind == "tensor":
        prob = torch.from_numpy(prob)
    out = InteriorBoundaryToInstances(min_size=9)(prob)
    assert isinstance(out, MetaTensor) and out.shape == (1, 12, 22) and out.dtype == torch.int32
    np.testing.assert_array_equal(out[0].numpy(), EXPECTED)  # numbered in raster order of the seeds
    if kind == "metatensor":
        assert out.meta["id"] == "img7"


@pytest.mark.parametrize("shape", [(12, 22), (2, 12, 22), (1, 3, 12, 22)])
def test_decoding_transform_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        InteriorBoundaryToInstances()(torch.zeros(shape))


def test_decoding_dict_transform_writes_pred_and_foreground_probability() -> None:
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(3, 12, 22)).astype(np.float32)) + 4 * torch.from_numpy(one_hot(CLASSES))
    prob = torch.softmax(logits, dim=0)
    out = InteriorBoundaryToInstancesd(min_size=9)({"prob": prob})
    assert set(out) == {"prob", "pred", "fg_prob"}
    np.testing.assert_allclose(out["fg_prob"].numpy(), 1.0 - prob[:1].numpy(), atol=1e-6)
    np.testing.assert_array_equal(out["pred"][0].numpy() > 0, EXPECTED > 0)
    assert int(out["pred"].max()) == 3
    assert "fg_prob" not in InteriorBoundaryToInstancesd(fg_key=None)({"prob": prob})


@pytest.mark.parametrize("kind", ["tensor", "numpy"])
def test_foreground_probability_stays_in_unit_interval(kind: str) -> None:
    # a float32 softmax whose interior + boundary rounds to 1 + 1 ulp
    prob = np.zeros((3, 4, 4), np.float32)
    prob[:, :, :] = np.array([5.1827825586769904e-08, 0.9902616143226624, 0.00973844900727272], np.float32)[
        :, None, None
    ]
    assert (prob[1] + prob[2]).max() > 1.0
    data = {"prob": torch.from_numpy(prob) if kind == "tensor" else prob}
    fg = np.asarray(InteriorBoundaryToInstancesd(min_size=1)(data)["fg_prob"])
    assert fg.shape == (1, 4, 4) and fg.max() == 1.0 and fg.min() >= 0.0
