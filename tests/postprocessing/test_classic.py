from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.postprocessing.classic import ClassicBaseline, otsu_foreground, otsu_watershed

SHAPE = (96, 128)
# well separated discs: (cy, cx, r)
DISCS = [(20, 20, 8), (20, 64, 10), (24, 106, 6), (70, 26, 12), (72, 72, 7), (66, 108, 9)]


def disc_mask(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def nuclei_mask() -> np.ndarray:
    return np.any([disc_mask(*d) for d in DISCS], axis=0)


def make_image(kind: str, seed: int = 0) -> np.ndarray:
    """Synthetic nuclei: fluorescence (bright on dark), brightfield (dark on bright), H&E-like RGB (C, H, W)."""
    rng = np.random.default_rng(seed)
    nuclei = nuclei_mask()
    if kind == "fluorescence":
        return (100 + 900 * nuclei + rng.normal(0, 60, SHAPE)).astype(np.float32)
    if kind == "brightfield":
        return (0.9 - 0.6 * nuclei + rng.normal(0, 0.05, SHAPE)).astype(np.float32)
    # H&E-like: pink background, purple nuclei, channel-first
    background, nucleus = np.array([0.93, 0.75, 0.85]), np.array([0.35, 0.2, 0.55])
    rgb = np.where(nuclei[None], nucleus[:, None, None], background[:, None, None])
    return (rgb + rng.normal(0, 0.04, (3, *SHAPE))).astype(np.float32)


def assert_one_label_per_disc(labels: np.ndarray) -> None:
    assert labels.max() == len(DISCS)
    centre_ids = {int(labels[cy, cx]) for cy, cx, _ in DISCS}
    assert centre_ids == set(range(1, len(DISCS) + 1))
    for cy, cx, r in DISCS:
        obj = labels == labels[cy, cx]
        ref = disc_mask(cy, cx, r)
        assert (obj & ref).sum() / (obj | ref).sum() > 0.85


@pytest.mark.parametrize("kind", ["fluorescence", "brightfield", "he_rgb"])
def test_otsu_watershed_counts_discs_either_polarity(kind: str) -> None:
    labels = otsu_watershed(make_image(kind))
    assert labels.shape == SHAPE and labels.dtype == np.int32
    assert_one_label_per_disc(labels)


@pytest.mark.parametrize("kind", ["fluorescence", "brightfield"])
def test_otsu_foreground_polarity(kind: str) -> None:
    image = make_image(kind)
    auto = otsu_foreground(image)
    ref = nuclei_mask()
    assert (auto & ref).sum() / (auto | ref).sum() > 0.9
    np.testing.assert_array_equal(otsu_foreground(image, "bright"), ~otsu_foreground(image, "dark"))
    expected = "bright" if kind == "fluorescence" else "dark"
    np.testing.assert_array_equal(auto, otsu_foreground(image, expected))


def test_wrong_polarity_does_not_find_the_discs() -> None:
    labels = otsu_watershed(make_image("brightfield"), polarity="bright")
    assert all(labels[cy, cx] == 0 for cy, cx, _ in DISCS) or labels.max() != len(DISCS)


def test_constant_image_gives_no_objects() -> None:
    np.testing.assert_array_equal(otsu_watershed(np.full(SHAPE, 3.0)), np.zeros(SHAPE, np.int32))


@pytest.mark.parametrize(
    "image,kwargs,error",
    [
        (np.zeros((2, 3, 8, 8)), {}, ValueError),
        (np.zeros(8), {}, ValueError),
        (np.full((8, 8), np.nan), {}, ValueError),
        (np.zeros((8, 8)), {"polarity": "up"}, ValueError),
    ],
)
def test_bad_input(image: np.ndarray, kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        otsu_watershed(image, **kwargs)


def test_classic_baseline_module() -> None:
    batch = torch.stack(
        [torch.from_numpy(make_image("he_rgb")), torch.from_numpy(make_image("brightfield", 1)).expand(3, *SHAPE)]
    )
    model = ClassicBaseline()
    assert len(list(model.parameters())) == 0 and len(model.state_dict()) == 0
    out = model(batch)
    assert out.shape == (2, 1, *SHAPE) and out.dtype == torch.float32
    for labels in out[:, 0].numpy():
        assert_one_label_per_disc(labels.astype(np.int32))
    with pytest.raises(ValueError, match="B, C, H, W"):
        model(batch[0])


def test_channel_last_image_is_rejected_with_a_hint():
    with pytest.raises(ValueError, match="channel-last"):
        otsu_watershed(np.zeros((40, 50, 3)))
