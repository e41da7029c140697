"""CanonicalShapePredictor: per-tile instances with P, representative affine attributes; the PNG writer."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch import nn

from cellseg_monai.handlers import CanonicalShapeWriter
from cellseg_monai.inferers import AFFINE_ATTRIBUTES, CanonicalShapePredictor, TiledInstanceInferer
from cellseg_monai.networks import CanonicalShapeNet


class _Fixed(nn.Module):
    """Instances on a 32×32 tile: a big square, a brighter small square inside it (P merges it), a separate one,
    and a fourth with p(z) = 0.3 whose mask would cover the tile (absent: p(s) p(z) <= 0.3 < threshold)."""

    centres = torch.tensor([[10.0, 10.0], [9.0, 9.0], [25.0, 24.0], [16.0, 16.0]])

    def predict_parameters(self, tiles):
        b = tiles.shape[0]
        return {
            "L": torch.tensor([[3.0, 0.0], [0.0, 2.0]]).expand(b, 4, 2, 2),
            "t": torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.5, -0.5], [0.0, 0.0]]).expand(b, 4, 2),
            "centre": self.centres.expand(b, 4, 2),
            "presence": torch.tensor([0.95, 0.9, 0.75, 0.3]).expand(b, 4),
            "image_size": torch.tensor([32.0, 32.0]).expand(b, 2),
        }

    def render_instances(self, params, size):
        masks = torch.zeros(4, *size)
        masks[0, 4:16, 4:16] = 0.9
        masks[1, 6:12, 6:12] = 0.95  # brighter: without P it keeps its pixels
        masks[2, 20:28, 20:30] = 0.7
        masks[3] = 0.3
        idx = [int((self.centres == c).all(1).nonzero()[0, 0]) for c in params["centre"][0]]
        return masks[idx][None]


@pytest.mark.parametrize("merge, n_labels", [(True, 2), (False, 3)])
def test_predictor_labels_scores_and_representative_attributes(merge, n_labels):
    (res,) = CanonicalShapePredictor(merge=merge)(_Fixed(), torch.zeros(1, 1, 32, 32))
    labels, scores, attrs = res["labels"], res["scores"], res["attributes"]
    assert labels.max() == n_labels and attrs.shape == (n_labels, len(AFFINE_ATTRIBUTES))
    col = {a: i for i, a in enumerate(AFFINE_ATTRIBUTES)}
    big = labels[5, 5] - 1  # the big square's label keeps the big instance's parameters (its representative)
    assert attrs[big, col["x"]] == 10.0 and attrs[big, col["presence"]] == pytest.approx(0.95)
    sep = labels[24, 24] - 1
    assert (attrs[sep, col["x"]], attrs[sep, col["y"]]) == (25.5, 23.5)
    assert attrs[sep, col["axis_major"]] == 3.0 and attrs[sep, col["axis_minor"]] == 2.0
    np.testing.assert_allclose(scores, attrs[:, col["presence"]])
    if merge:
        assert labels[8, 8] == labels[5, 5]  # the small square merged into the big one


def test_predictor_positions_become_whole_image_positions_when_stitched():
    inferer = TiledInstanceInferer((32, 32), 0.0, predictor=CanonicalShapePredictor(), num_attributes=9)
    out = inferer(torch.zeros(1, 1, 32, 64), _Fixed())
    x = out[0, 2 + AFFINE_ATTRIBUTES.index("x")].numpy()
    assert x[24, 24] == 25.5 and x[24, 32 + 24] == 25.5 + 32  # second tile: shifted by its offset


def test_canonical_shape_writer(tmp_path):
    net = CanonicalShapeNet(in_channels=1, features=8)
    path = CanonicalShapeWriter(net, tmp_path, size=64, extent=2.0)()
    img = iio.imread(path)
    expected = net.canonical_shape(64, 2.0).numpy()  # the initial MLP draws a disc of radius ~1
    assert img.shape == (64, 64) and img.dtype == np.uint8
    np.testing.assert_allclose(img, np.round(expected * 255), atol=1)
    assert img[32, 32] > 200 and img[0, 0] < 50


def test_writer_needs_a_canonical_shape_network(tmp_path):
    with pytest.raises(TypeError, match="canonical_shape"):
        CanonicalShapeWriter(nn.Linear(2, 2), tmp_path)


class _WholeTile(nn.Module):
    """The same network without ``render_points``: the predictor renders every instance on the whole tile."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def predict_parameters(self, tiles):
        return self.net.predict_parameters(tiles)

    def render_instances(self, params, size):
        return self.net.render_instances(params, size)


def _present_net(seed: int) -> CanonicalShapeNet:
    """A small random network whose instances are mostly present, with varied sizes, shears and offsets."""
    torch.manual_seed(seed)
    net = CanonicalShapeNet(in_channels=1, features=8).eval()
    with torch.no_grad():
        net.affine_head.weight.normal_(0.0, 0.3)
        net.presence_head.bias.fill_(1.5)
    return net


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("too_small_radius", [False, True])
def test_box_rendering_gives_the_labels_of_whole_tile_rendering(seed, too_small_radius):
    net = _present_net(seed)
    tiles = torch.rand(3, 1, 64, 80, generator=torch.Generator().manual_seed(seed))
    predictor = CanonicalShapePredictor()
    if too_small_radius:  # boxes that cut the instances: the border check renders those on the whole tile
        predictor._support_radius = lambda shape: 0.3
    with torch.no_grad():
        fast = predictor(net, tiles)
        reference = CanonicalShapePredictor()(_WholeTile(net), tiles)
    assert sum(int(r["labels"].max()) for r in reference) > 10  # a non-trivial case
    for got, expected in zip(fast, reference, strict=True):
        np.testing.assert_array_equal(got["labels"], expected["labels"])
        np.testing.assert_array_equal(got["attributes"], expected["attributes"])
        np.testing.assert_array_equal(got["scores"], expected["scores"])
