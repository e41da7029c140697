from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import ChannelSELayer

from cellseg_monai.networks.seunet import SEConvBlock, SEUNet, pad_to_multiple

SHAPE_CASES = [
    # in_channels, heads, features, se_reduction, (H, W)
    (1, ("foreground",), (4, 8), 2, (16, 16)),
    (3, ("foreground", "border", "background", "overlap"), (4, 8, 16), 4, (32, 24)),
    (3, ("foreground", "nuclei", "border"), (8, 8, 8, 8), 0, (20, 27)),  # odd size: padded and cropped back
]


@pytest.mark.parametrize("in_channels,heads,features,se_reduction,size", SHAPE_CASES)
def test_shapes_and_levels(in_channels, heads, features, se_reduction, size):
    torch.manual_seed(0)
    net = SEUNet(in_channels, heads, features, se_reduction, head_channels=4)
    x = torch.rand(2, in_channels, *size)
    out = net(x)
    assert out.shape == (2, len(heads), *size) and torch.isfinite(out).all()
    padded, _ = pad_to_multiple(x, net.stride)
    logits, levels = net.decode(padded)
    assert len(levels) == len(features) - 1
    for i, level in enumerate(levels):  # coarse -> fine
        scale = 2 ** (len(features) - 2 - i)
        assert level.shape == (2, net.decoder_channels[i], padded.shape[2] // scale, padded.shape[3] // scale)
    n_se = sum(isinstance(m, ChannelSELayer) for m in net.modules())
    assert n_se == (0 if se_reduction == 0 else 2 * len(features) - 1)  # every encoder and decoder stage


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = SEUNet(3, ("foreground", "border"), (4, 8, 16), se_reduction=2, head_channels=4)
    net(torch.rand(2, 3, 16, 16)).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert net.encoder[0][0].weight.grad.abs().sum() > 0


def test_heads_are_decoupled():
    """Each head's output depends on its own head parameters only."""
    torch.manual_seed(0)
    net = SEUNet(1, ("a", "b"), (4, 8), head_channels=4)
    net(torch.rand(1, 1, 8, 8))[:, 0].sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in net.head_layers[1].parameters())
    assert all(p.grad.any() for p in net.head_layers[0].parameters())


def test_se_block_and_pad():
    block = SEConvBlock(3, 8, se_reduction=16)  # reduction above the channel count is clipped
    assert block(torch.rand(1, 3, 5, 5)).shape == (1, 8, 5, 5)
    x = torch.ones(1, 1, 5, 7)
    padded, size = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 8, 8) and size == (5, 7) and padded.sum() == 35


@pytest.mark.parametrize("kwargs", [{"features": (4,)}, {"features": (4, 0)}, {"heads": ()}, {"se_reduction": -1}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SEUNet(**kwargs)


def test_rejects_non_batched_input():
    with pytest.raises(ValueError, match="B, C, H, W"):
        SEUNet(features=(4, 8))(torch.rand(3, 16, 16))
