"""FlipAveragingInferer: the average over mirrored inputs, checked against numpy flips done by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer

from cellseg_monai.inferers import FittedSlidingWindowInferer, FlipAveragingInferer, symmetry_transforms


class CountingNet(torch.nn.Module):
    """A 3x3 convolution without symmetry (its output changes under a flip) that counts its calls."""

    def __init__(self, out_channels: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, out_channels, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x)


def numpy_reference(net: torch.nn.Module, x: np.ndarray, transforms: list[tuple[tuple[int, ...], bool]]) -> np.ndarray:
    """Mean over ``transforms`` of T^-1(net(T(x))), every flip and transpose done in numpy."""
    outs = []
    for dims, transposed in transforms:
        t = np.flip(x, axis=dims) if dims else x
        t = np.swapaxes(t, -2, -1) if transposed else t
        with torch.no_grad():
            y = net(torch.from_numpy(np.ascontiguousarray(t))).numpy()
        y = np.swapaxes(y, -2, -1) if transposed else y
        outs.append(np.flip(y, axis=dims) if dims else y)
    return np.mean(outs, axis=0)


def test_the_transforms_are_the_flip_group_and_the_square_symmetries():
    assert symmetry_transforms("none") == [((), False)]
    assert symmetry_transforms("flips") == [((), False), ((-1,), False), ((-2,), False), ((-2, -1), False)]
    dihedral = symmetry_transforms("dihedral")
    assert len(dihedral) == len(set(dihedral)) == 8
    assert dihedral[0] == ((), False)
    # the 8 transforms send a non-symmetric square to 8 different images (the whole dihedral group)
    square = np.arange(9).reshape(3, 3)
    images = set()
    for dims, transposed in dihedral:
        t = np.flip(square, axis=dims) if dims else square
        images.add((np.swapaxes(t, -2, -1) if transposed else t).tobytes())
    assert len(images) == 8


@pytest.mark.parametrize("augmentation,passes", [("flips", 4), ("dihedral", 8)])
def test_the_output_is_the_mean_over_transformed_inputs(augmentation, passes):
    net = CountingNet()
    x = np.random.default_rng(0).random((2, 1, 9, 13), dtype=np.float32)  # not square: the transpose must round-trip
    expected = numpy_reference(net, x, symmetry_transforms(augmentation))
    net.calls = 0
    with torch.no_grad():
        got = FlipAveragingInferer(SimpleInferer(), augmentation)(torch.from_numpy(x), net)
    assert net.calls == passes
    assert got.shape == (2, 2, 9, 13)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    with torch.no_grad():
        plain = net(torch.from_numpy(x)).numpy()
    assert np.abs(got.numpy() - plain).max() > 1e-3  # the network is not symmetric, so averaging changed something


def test_none_calls_the_inner_inferer_once_and_returns_its_output():
    net = CountingNet()
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        got = FlipAveragingInferer(SimpleInferer(), "none")(x, net)
        assert net.calls == 1
        torch.testing.assert_close(got, net(x), rtol=0, atol=0)


def test_a_symmetric_network_is_unchanged_by_the_average():
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]]]))
    x = torch.rand(1, 1, 7, 11)
    with torch.no_grad():
        torch.testing.assert_close(FlipAveragingInferer(SimpleInferer(), "dihedral")(x, conv), conv(x))


def test_a_sliding_window_inner_inferer_on_a_non_square_image():
    net = CountingNet()
    inner = FittedSlidingWindowInferer(roi_size=(16, 16), overlap=0.25, divisible_by=1, mode="gaussian")
    x = torch.rand(1, 1, 21, 37)
    transforms = symmetry_transforms("dihedral")
    with torch.no_grad():
        got = FlipAveragingInferer(inner, "dihedral")(x, net)
        expected = torch.zeros_like(got)
        for dims, transposed in transforms:
            t = torch.flip(x, dims) if dims else x
            t = t.transpose(-2, -1) if transposed else t
            y = inner(t, net)
            y = y.transpose(-2, -1) if transposed else y
            expected += torch.flip(y, dims) if dims else y
    torch.testing.assert_close(got, expected / len(transforms))


def test_kept_channels_come_from_the_identity_pass():
    net = CountingNet(out_channels=3)
    x = torch.rand(1, 1, 10, 10)
    with torch.no_grad():
        got = FlipAveragingInferer(SimpleInferer(), "flips", keep_channels=[0])(x, net)
        plain = net(x)
    expected = numpy_reference(net, x.numpy(), symmetry_transforms("flips"))
    torch.testing.assert_close(got[:, 0], plain[:, 0])
    np.testing.assert_allclose(got[:, 1:].numpy(), expected[:, 1:], atol=1e-6)


def test_dict_and_tuple_outputs_are_averaged_leaf_by_leaf():
    net = CountingNet()

    def two_heads(x):
        y = net(x)
        return {"a": y[:, :1], "b": (y[:, 1:], y[:, 1:] * 2)}

    x = torch.rand(1, 1, 6, 9)
    with torch.no_grad():
        got = FlipAveragingInferer(SimpleInferer(), "flips")(x, two_heads)
    expected = numpy_reference(net, x.numpy(), symmetry_transforms("flips"))
    np.testing.assert_allclose(got["a"].numpy(), expected[:, :1], atol=1e-6)
    np.testing.assert_allclose(got["b"][0].numpy(), expected[:, 1:], atol=1e-6)
    np.testing.assert_allclose(got["b"][1].numpy(), 2 * expected[:, 1:], atol=1e-6)
    assert isinstance(got["b"], tuple)


def test_outputs_that_cannot_be_averaged_are_refused():
    x = torch.rand(1, 1, 8, 8)
    inferer = FlipAveragingInferer(SimpleInferer(), "flips")
    with pytest.raises(ValueError, match="averages tensor outputs; the inferer returned str"):
        inferer(x, lambda t: "boxes")
    with pytest.raises(ValueError, match=r"per-pixel maps .* the inferer returned shape \(1, 4\)"):
        inferer(x, lambda t: torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"per-pixel maps .* the inferer returned shape \(4,\)"):
        inferer(x, lambda t: torch.zeros(4))
    with pytest.raises(ValueError, match=r"needs a 2D batch \(B, C, H, W\), got shape \(1, 1, 4, 4, 4\)"):
        inferer(torch.rand(1, 1, 4, 4, 4), lambda t: t)
    with pytest.raises(ValueError, match="must be one of"):
        FlipAveragingInferer(SimpleInferer(), "rotations")
