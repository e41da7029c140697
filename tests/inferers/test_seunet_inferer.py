"""SEUNetInferer: the sparse decoder's tiles and the watershed decoder's fitted window, each equal to the inferer it
delegates to, run independently on the same network."""

from __future__ import annotations

import pytest
import torch

from cellseg_monai.inferers import FittedSlidingWindowInferer, SEUNetInferer, TiledInstanceInferer
from cellseg_monai.networks import SparseSEUNet

KW = dict(in_channels=1, heads=("foreground", "border"), features=(4, 8), head_channels=4, num_instances=4,
          inst_channels=8, kernel_dim=4, instance_level=0, score_threshold=0.0, mask_threshold=0.0, min_size=1)  # fmt: skip


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 1, 150, 70)


def test_sparse_decoder_tiles_like_the_tiled_instance_inferer(image):
    torch.manual_seed(0)
    net = SparseSEUNet(**KW).eval()
    out = SEUNetInferer("sparse", (32, 32), overlap=0.5, sw_batch_size=3, num_pixel_channels=2)(image, net)
    ref = TiledInstanceInferer((32, 32), 0.5, 3, num_pixel_channels=2)(image, net)
    assert out.shape == (1, 4, 150, 70)
    torch.testing.assert_close(out, ref)
    assert out[:, 0].max() > 0  # the zero thresholds let the sparse branch find instances


def test_watershed_decoder_blends_the_semantic_heads_over_large_tiles(image):
    torch.manual_seed(0)
    net = SparseSEUNet(**KW, decoder="watershed").eval()
    inferer = SEUNetInferer("watershed", (32, 32), semantic_roi_size=64, semantic_overlap=0.25, divisible_by=2)
    calls = []
    net.register_forward_hook(lambda _m, args, _o: calls.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        out = inferer(image, net)
        n_calls, tiles = len(calls), set(calls)
        ref = FittedSlidingWindowInferer(64, 0.25, divisible_by=2, min_tile=8)(image, net)
    assert out.shape == (1, 4, 150, 70)
    torch.testing.assert_close(out, ref)
    assert torch.all(out[:, :2] == 0)
    # fitted tiles, not the sparse decoder's 32² ones: 150 rows need 3 tiles of <= 64, 70 columns 2
    assert n_calls == 6 and all(h <= 64 and w <= 64 and (h, w) != (32, 32) for h, w in tiles)
    # away from tile seams the blended probabilities are the network's own on the tile
    with torch.no_grad():
        whole = net(image)
    assert torch.all((out[:, 2:] >= 0) & (out[:, 2:] <= 1))
    assert (out[:, 2:] - whole[:, 2:]).abs().mean() < 0.05


def test_unknown_decoder():
    with pytest.raises(ValueError, match="decoder"):
        SEUNetInferer("stardist", (32, 32))
