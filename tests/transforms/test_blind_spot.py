from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.transforms.blind_spot import BlindSpot, BlindSpotd


def _unique_image(c: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(c * h * w).reshape(c, h, w).astype(np.float32) / (c * h * w)


def _check_masking(img: np.ndarray, out: np.ndarray, mask: np.ndarray, fraction: float, radius: int) -> None:
    c, h, w = img.shape
    assert out.shape == img.shape and mask.shape == (1, h, w)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert mask.sum() == max(1, round(fraction * h * w))
    keep = mask[0] == 0
    np.testing.assert_array_equal(out[:, keep], img[:, keep])
    for y, x in zip(*np.nonzero(mask[0]), strict=True):
        sources = [
            (yy, xx)
            for yy in range(h)
            for xx in range(w)
            if np.array_equal(out[:, y, x], img[:, yy, xx])  # brute force over the whole image
        ]
        assert len(sources) == 1, "values are unique, so exactly one source pixel"
        yy, xx = sources[0]
        assert (yy, xx) != (y, x)
        assert max(abs(yy - y), abs(xx - x)) <= radius


@pytest.mark.parametrize(
    "shape,fraction,radius",
    [((1, 16, 16), 0.05, 2), ((3, 13, 17), 0.1, 1), ((2, 9, 11), 0.3, 3), ((1, 8, 8), 0.001, 2), ((1, 1, 5), 1.0, 1)],
)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_blind_spot_brute_force(shape, fraction, radius, as_tensor):
    img = _unique_image(*shape, seed=sum(shape))
    t = BlindSpot(fraction=fraction, radius=radius).set_random_state(seed=0)
    out, mask = t(torch.from_numpy(img) if as_tensor else img)
    assert isinstance(out, torch.Tensor) == as_tensor and isinstance(mask, torch.Tensor) == as_tensor
    if as_tensor:
        out, mask = out.numpy(), mask.numpy()
    assert mask.dtype == np.float32
    _check_masking(img, out, mask, fraction, radius)


def test_neighbour_offsets_cover_window_but_not_self():
    img = _unique_image(1, 30, 30, seed=1)
    t = BlindSpot(fraction=0.5, radius=1).set_random_state(seed=3)
    offsets = set()
    flat = {float(v): divmod(i, 30) for i, v in enumerate(img[0].ravel())}
    for _ in range(3):
        out, mask = t(img)
        for y, x in zip(*np.nonzero(mask[0]), strict=True):
            yy, xx = flat[float(out[0, y, x])]
            offsets.add((yy - y, xx - x))
    assert offsets == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)} - {(0, 0)}


def test_seeded_reproducibility():
    img = _unique_image(1, 20, 20, seed=2)
    a = BlindSpot(0.05, 2).set_random_state(seed=42)
    b = BlindSpot(0.05, 2).set_random_state(seed=42)
    c = BlindSpot(0.05, 2).set_random_state(seed=43)
    out_a, mask_a = a(img)
    out_b, mask_b = b(img)
    out_c, mask_c = c(img)
    np.testing.assert_array_equal(mask_a, mask_b)
    np.testing.assert_array_equal(out_a, out_b)
    assert not np.array_equal(mask_a, mask_c)
    out_again, mask_again = a(img, randomize=False)
    np.testing.assert_array_equal(mask_again, mask_a)


def test_dictionary_version():
    img = torch.from_numpy(_unique_image(2, 12, 12, seed=5))
    t = BlindSpotd(keys="image", output_key="masked_image", mask_key="blind_mask", fraction=0.1, radius=2)
    t.set_random_state(seed=0)
    d = t({"image": img, "id": "x"})
    assert torch.equal(d["image"], img)  # original kept
    assert d["id"] == "x"
    _check_masking(img.numpy(), d["masked_image"].numpy(), d["blind_mask"].numpy(), 0.1, 2)
    t2 = BlindSpotd(keys="image", fraction=0.1, radius=2).set_random_state(seed=0)
    d2 = t2({"image": img})
    assert torch.equal(d2["blind_mask"], d["blind_mask"])


@pytest.mark.parametrize("kwargs", [{"fraction": 0.0}, {"fraction": 1.5}, {"radius": 0}, {"radius": 1.5}])
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        BlindSpot(**kwargs)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="C, H, W"):
        BlindSpot()(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="at least 2 pixels"):
        BlindSpot()(np.zeros((1, 1, 1), dtype=np.float32))
    with pytest.raises(TypeError):
        BlindSpot()([[[0.0]]])
    with pytest.raises(ValueError, match="exactly one"):
        BlindSpotd(keys=["image", "other"])
