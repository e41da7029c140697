from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from cellseg_monai.transforms.semantic_targets import (
    SemanticTargets,
    SemanticTargetsd,
    SEUNetOutputsToInstances,
    SEUNetOutputsToInstancesd,
    instance_stack,
    overlap_probability_map,
    semantic_targets,
)

YY, XX = np.mgrid[:40, :60]


def _disc(cy: int, cx: int, r: int) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r * r


def _log_scale(d: float, b: float = 0.1) -> float:
    return b + (1 - b) * math.log(1 + (math.e - 1) * d)


def test_overlap_map_two_overlapping_discs():
    """Two discs of radius 8 whose centres are 12 px apart overlap in a lens; values checked by hand."""
    a, b = _disc(20, 20, 8), _disc(20, 32, 8)
    omap = overlap_probability_map(np.stack([a, b]))
    assert omap.shape == (40, 60) and omap.dtype == np.float32
    assert omap[20, 20] == pytest.approx(1.0) and omap[20, 32] == pytest.approx(1.0)  # centres: EDT maximum
    assert omap[0, 0] == pytest.approx(0.1) and omap[20, 50] == pytest.approx(0.1)  # background
    # max EDT of a disc of radius 8: the pixel nearest to the centre outside it is at offset (4, 7), 16 + 49 > 64
    peak = math.sqrt(65)
    # the edge pixel (20, 12) of disc a: its left neighbour is outside -> EDT 1
    assert omap[20, 12] == pytest.approx(_log_scale(1 / peak), abs=1e-6)
    # lens middle (20, 26): nearest pixel outside disc a is (21, 28) (offset (1, 8) from a's centre, 65 > 64),
    # at distance sqrt(5); the same by symmetry for disc b -> max of two equal values
    assert omap[20, 26] == pytest.approx(_log_scale(math.sqrt(5) / peak), abs=1e-6)
    # the lens is a valley between the two centres
    assert omap[20, 26] < omap[20, 22] < omap[20, 20]
    assert np.all((omap >= 0.1 - 1e-6) & (omap <= 1 + 1e-6))


def test_overlap_map_label_image_equals_stack():
    labels = np.zeros((40, 60), np.int32)
    labels[_disc(20, 15, 7)] = 3
    labels[_disc(20, 40, 9)] = 7
    np.testing.assert_allclose(
        overlap_probability_map(labels), overlap_probability_map(np.stack([labels == 3, labels == 7]))
    )
    np.testing.assert_allclose(overlap_probability_map(np.zeros((5, 5), np.int32), 0.2), np.full((5, 5), 0.2))


def test_targets_of_touching_label_image():
    labels = np.zeros((40, 60), np.int32)
    labels[5:20, 5:20] = 1
    labels[5:20, 20:35] = 2  # touches object 1
    t = semantic_targets(labels, heads=("foreground", "border", "background", "overlap"))
    assert t.shape == (4, 40, 60)
    np.testing.assert_array_equal(t[0], labels > 0)
    np.testing.assert_array_equal(t[2], labels == 0)
    # independent reference: skimage inner boundaries (objects touching each other both get a border)
    np.testing.assert_array_equal(t[1], find_boundaries(labels, connectivity=1, mode="inner") & (labels > 0))
    assert t[3].min() == pytest.approx(0.1) and t[3].max() == pytest.approx(1.0)


def test_targets_of_overlapping_stack_and_nuclei():
    a, b = _disc(20, 20, 8), _disc(20, 30, 8)
    nuclei = np.zeros((40, 60), np.int32)
    nuclei[_disc(20, 20, 3)] = 1
    t = semantic_targets(np.stack([a, b]), heads=("nuclei", "foreground", "border"), nuclei=nuclei)
    np.testing.assert_array_equal(t[0], nuclei > 0)
    np.testing.assert_array_equal(t[1], a | b)
    # each disc's own edge is border, also where it lies inside the other disc
    edge_a = a & ~ndi.binary_erosion(a)
    assert t[2][edge_a].all()


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"heads": ("foreground", "cytoplasm")}, ValueError),
        ({"heads": ()}, ValueError),
        ({"heads": ("nuclei",)}, ValueError),  # no nuclei image
        ({"border_width": 0}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        semantic_targets(np.ones((4, 4), np.int32), **kwargs)


def test_instance_stack_rejects_float_label_image():
    with pytest.raises(TypeError):
        instance_stack(np.ones((4, 4)) * 0.5)


def test_array_and_dict_transforms():
    labels = torch.zeros(1, 16, 16, dtype=torch.int32)
    labels[0, 2:8, 2:8] = 1
    out = SemanticTargets(heads=("foreground", "background"))(labels)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, 16, 16)
    assert out[0].sum() == 36 and out[1].sum() == 256 - 36
    d = SemanticTargetsd(keys="label", output_key="sem", heads=("foreground",))({"label": labels})
    assert d["sem"].shape == (1, 16, 16) and "label" in d
    with pytest.raises(ValueError, match="nuclei_key"):
        SemanticTargetsd(heads=("nuclei",))


def _network_output(heads: tuple[str, ...]) -> torch.Tensor:
    """Hand-made (2 + K, H, W) output: two touching squares, sparse labels swapped in channel 0."""
    h, w = 20, 40
    fg = torch.zeros(h, w)
    fg[4:16, 4:34] = 1.0
    border = torch.zeros(h, w)
    border[4:16, 4:34] = 1.0
    border[5:15, 5:18] = 0.0
    border[5:15, 20:33] = 0.0
    sparse = torch.zeros(h, w)
    sparse[4:16, 4:19] = 1
    sparse[4:16, 19:34] = 2
    score = (sparse > 0) * 0.9
    chans = {"foreground": fg, "border": border, "background": 1 - fg, "overlap": fg * 0.5}
    return torch.stack([sparse, score, *(chans[k] for k in heads)])


@pytest.mark.parametrize("heads", [("foreground", "border", "background", "overlap"), ("border", "background")])
def test_decoders(heads):
    out = _network_output(heads)
    labels, score, fg = SEUNetOutputsToInstances("sparse", heads)(out)
    assert labels.dtype == torch.int32 and labels.shape == (1, 20, 40)
    torch.testing.assert_close(labels[0].float(), out[0])
    torch.testing.assert_close(score, out[1:2])
    assert fg.shape == (1, 20, 40) and fg.max() == 1.0
    labels, score, _ = SEUNetOutputsToInstances("watershed", heads, min_size=4)(out)
    # the watershed finds the two interiors the border channel separates
    assert int(labels.max()) == 2
    assert set(np.unique(labels[0, 5:15, 5:18].numpy())) == {1} or set(np.unique(labels[0, 5:15, 5:18].numpy())) == {2}
    assert torch.all(score[labels > 0] == 1.0) and torch.all(score[labels == 0] == 0.0)
    d = SEUNetOutputsToInstancesd(decoder="watershed", heads=heads, min_size=4)({"pred": out})
    assert set(d) == {"pred", "score", "fg_prob"}


def test_decoder_errors():
    with pytest.raises(ValueError, match="decoder"):
        SEUNetOutputsToInstances("mask-rcnn")
    with pytest.raises(ValueError, match="border"):
        SEUNetOutputsToInstances("watershed", heads=("foreground",))
    with pytest.raises(ValueError, match="shape"):
        SEUNetOutputsToInstances()(torch.zeros(3, 4, 4))
