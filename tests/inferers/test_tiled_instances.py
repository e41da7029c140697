"""Tiled instance inference: tiles, cores, and instances that come back whole after stitching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cellseg_monai.inferers import TiledInstanceInferer, tile_cores, tile_starts
from tests.inferers.test_tiled_roundtrip import _discs


@pytest.mark.parametrize(
    "size, roi, overlap, expected",
    [
        (100, 128, 0.5, [0]),
        (128, 128, 0.5, [0]),
        (256, 128, 0.5, [0, 64, 128]),
        (300, 128, 0.25, [0, 96, 172]),
        (200, 100, 0.0, [0, 100]),
    ],
)
def test_tile_starts(size, roi, overlap, expected):
    assert tile_starts(size, roi, overlap) == expected


def test_tile_cores_partition_the_axis():
    starts = [0, 96, 172]
    cores = tile_cores(starts, 128, 300)
    assert cores == [(0.0, 112.0), (112.0, 198.0), (198.0, 300.0)]  # middles of [96, 128) and [172, 224)


def _components(net, tiles):
    """Predictor: connected components of the thresholded tile; attributes = centroid (x, y) in tile pixels."""
    out = []
    for t in tiles:
        labels, k = ndimage.label(t[0].numpy() > 0.5)
        com = ndimage.center_of_mass(np.ones_like(labels), labels, np.arange(1, k + 1))
        attrs = np.array([[c[1] + 0.5, c[0] + 0.5] for c in com]).reshape(k, 2)
        out.append({"labels": labels, "scores": np.linspace(0.5, 1.0, k), "attributes": attrs})
    return out


_components.xy_attributes = (0, 1)


@pytest.mark.parametrize("roi, overlap", [((128, 128), 0.5), ((96, 160), 0.4), ((256, 256), 0.25)])
def test_every_instance_comes_back_once_and_whole(roi, overlap):
    labels = _discs()  # 60 discs of radius 6..10, apart: each fits in half of every overlap here
    image = torch.as_tensor((labels > 0).astype(np.float32))[None, None]
    out = TiledInstanceInferer(roi, overlap, sw_batch_size=3, predictor=_components, num_attributes=2)(image, None)
    assert out.shape == (1, 4, *labels.shape)
    pred = out[0, 0].numpy().astype(int)
    assert pred.max() == labels.max()
    # the same partition of pixels (each GT disc is exactly one predicted instance)
    pairs = set(zip(labels[labels > 0].tolist(), pred[labels > 0].tolist(), strict=True))
    assert len(pairs) == labels.max() and (pred[labels == 0] == 0).all()
    # attributes shifted to whole-image coordinates: the (x, y) of each instance is its centroid
    com = ndimage.center_of_mass(np.ones_like(labels), labels, np.arange(1, labels.max() + 1))
    for g, p in pairs:
        x, y = out[0, 2].numpy()[pred == p][0], out[0, 3].numpy()[pred == p][0]
        assert x == pytest.approx(com[g - 1][1] + 0.5, abs=1e-4) and y == pytest.approx(com[g - 1][0] + 0.5, abs=1e-4)
    assert (out[0, 1].numpy()[pred > 0] > 0).all()


def test_image_smaller_than_a_tile_is_padded_and_cropped_back():
    labels = np.zeros((50, 70), int)
    labels[10:20, 10:25] = 1
    labels[30:45, 40:60] = 2
    image = torch.as_tensor((labels > 0).astype(np.float32))[None, None]
    out = TiledInstanceInferer((128, 128), 0.5, predictor=_components, num_attributes=2, pad_mode="constant")(
        image, None
    )
    assert out.shape == (1, 4, 50, 70)
    np.testing.assert_array_equal(out[0, 0].numpy().astype(int), labels)


def test_higher_score_wins_where_instances_of_two_tiles_overlap():
    # width 96, tiles of 64 with overlap 0.5: offsets 0 and 32, cores [0, 48) and [48, 96)
    def one_per_tile(net, tiles):
        out = []
        for t in tiles:
            labels = np.zeros((64, 64), int)
            if int(t[0, 0, 0]) == 0:  # tile 0: global columns 20..59, centroid 40 (core 0), score 0.3
                labels[10:30, 20:60] = 1
                out.append({"labels": labels, "scores": np.array([0.3])})
            else:  # tile 1: global columns 52..71, centroid 62 (core 1), score 0.9
                labels[10:30, 20:40] = 1
                out.append({"labels": labels, "scores": np.array([0.9])})
        return out

    image = torch.arange(96, dtype=torch.float32).expand(1, 1, 64, 96)  # pixel value = global column
    out = TiledInstanceInferer((64, 64), 0.5, predictor=one_per_tile)(image, None)
    pred, score = out[0, 0].numpy(), out[0, 1].numpy()
    assert pred.max() == 2
    np.testing.assert_allclose(score[10:30, 52:72], 0.9, rtol=1e-6)  # the overlap went to the better instance
    np.testing.assert_allclose(score[10:30, 20:52], 0.3, rtol=1e-6)
    assert len(np.unique(pred[10:30, 52:72])) == 1 and len(np.unique(pred[10:30, 20:52])) == 1


def test_default_predictor_reads_labels_and_score_map():
    def net(tiles):
        lab = torch.zeros(tiles.shape[0], 1, *tiles.shape[-2:])
        lab[:, :, 5:15, 5:15] = 1
        return torch.cat([lab, 0.7 * lab], dim=1)

    out = TiledInstanceInferer((32, 32), 0.0)(torch.zeros(2, 1, 32, 64), net)
    assert out.shape == (2, 2, 32, 64)
    assert out[0, 0].max() == 2 and torch.allclose(out[0, 1][out[0, 0] > 0], torch.tensor(0.7))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"roi_size": (128,)}, "roi_size"), ({"roi_size": (64, 64), "overlap": 1.0}, "overlap")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TiledInstanceInferer(**kwargs)


def test_predictor_attribute_count_must_match():
    with pytest.raises(ValueError, match="num_attributes"):
        TiledInstanceInferer((32, 32), 0.0, predictor=_components, num_attributes=3)(torch.ones(1, 1, 32, 32), None)


def _column_net(tiles):
    """Labels (none), score, and two per-pixel channels: the tile-local column index and the input itself."""
    b, _, h, w = tiles.shape
    col = torch.arange(w, dtype=torch.float32).expand(b, 1, h, w)
    return torch.cat([torch.zeros(b, 2, h, w), col, tiles[:, :1]], dim=1)


def test_pixel_channels_come_from_the_tile_whose_core_holds_the_pixel():
    # width 96, tiles of 64 with overlap 0.5: offsets 0 and 32, cores [0, 48) and [48, 96)
    image = torch.rand(1, 1, 40, 96, generator=torch.Generator().manual_seed(0))
    out = TiledInstanceInferer((64, 64), 0.5, num_pixel_channels=2, pad_mode="constant")(image, _column_net)
    assert out.shape == (1, 4, 40, 96)
    x = np.arange(96)
    expected_col = np.where(x < 48, x, x - 32).astype(np.float32)  # local column in the owning tile
    np.testing.assert_array_equal(out[0, 2].numpy(), np.broadcast_to(expected_col, (40, 96)))
    np.testing.assert_array_equal(out[0, 3].numpy(), image[0, 0].numpy())  # a per-pixel function stitches exactly
    assert (out[0, 0] == 0).all()


def test_pixel_channels_follow_the_attributes():
    def with_pixels(net, tiles):
        res = _components(net, tiles)
        for r, t in zip(res, tiles, strict=True):
            r["pixels"] = 3.0 * t[:1].numpy()
        return res

    with_pixels.xy_attributes = (0, 1)
    labels = _discs()
    image = torch.as_tensor((labels > 0).astype(np.float32))[None, None]
    inferer = TiledInstanceInferer((128, 128), 0.5, predictor=with_pixels, num_attributes=2, num_pixel_channels=1)
    out = inferer(image, None)
    assert out.shape == (1, 5, *labels.shape)
    np.testing.assert_array_equal(out[0, 4].numpy(), 3.0 * (labels > 0))
    assert out[0, 0].max() == labels.max()


def test_pixel_channel_count_must_match():
    with pytest.raises(ValueError, match="num_pixel_channels=0"):
        TiledInstanceInferer((32, 32), 0.0)(torch.ones(1, 1, 32, 32), _column_net)
    with pytest.raises(ValueError, match="num_pixel_channels=3"):
        TiledInstanceInferer((32, 32), 0.0, num_pixel_channels=3)(torch.ones(1, 1, 32, 32), _column_net)
