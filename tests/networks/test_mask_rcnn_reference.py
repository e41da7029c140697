"""The shipped partial_maskrcnn weights give the same outputs as before MaskRCNN took its parts as arguments.

The reference numbers below were computed with the network as it was before that change (``MaskRCNN(in_channels=3,
backbone_channels=(16, 32, 64, 128), fpn_channels=64, representation_size=256, use_attention=True,
use_centerness=True, nucleus_size=16)``, commit a86e8f2) on crops of two embedded sample images, with
``bundles/partial_maskrcnn/models/model.pt`` loaded: per image the instance areas in label order and the sum of the
score channel; in training mode (``torch.manual_seed(123)``, one image and its labels) the shape and sum of every
output. When the shipped weights change, the numbers are computed again the same way: the commit-a86e8f2 network
(a worktree of that commit first on ``sys.path``) with the new weights (last: md5 8812021362e505f58647fe5b86cab2c8,
the 85-minute weights of partial_maskrcnn 0.2.3).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellseg_monai.data import sample_data_dir
from cellseg_monai.networks.mask_rcnn import PartialMaskRCNN, build_mask_rcnn

WEIGHTS = Path(__file__).resolve().parents[2] / "bundles" / "partial_maskrcnn" / "models" / "model.pt"
SIZES = {"in_channels": 3, "backbone_channels": (16, 32, 64, 128), "fpn_channels": 64, "representation_size": 256}

# image id -> (instance areas of labels 1..N, sum of the score channel, (area, centroid y, centroid x, score) of 1..3)
INFERENCE = {
    "1b6044e4858a": (
        [159, 164, 126, 243, 161, 132, 69, 14, 12, 40],
        957.662,
        [(159, 47.05, 112.79, 0.98018), (164, 75.98, 96.19, 0.96154), (126, 9.0, 74.35, 0.95534)],
    ),
    "648636ee314d": (
        [107, 87, 47, 77, 64, 82, 140, 39, 160, 45, 49, 1016, 12, 29, 35, 4, 30, 33, 24, 31, 39, 26, 6, 19, 8, 59]
        + [26, 21, 29, 19, 95, 12, 4],
        1317.2953,
        [(107, 53.31, 101.21, 0.94687), (87, 30.56, 10.16, 0.82714), (47, 34.72, 40.36, 0.78324)],
    ),
}
# training output -> (shape, sum) or value
TRAINING = {
    "rpn_logits": ((71,), -383.7192),
    "rpn_labels": ((71,), 7.0),
    "rpn_deltas": ((7, 4), 0.0956),
    "rpn_targets": ((7, 4), -0.0942),
    "box_logits": ((128, 2), -37.6754),
    "box_labels": ((128,), 32.0),
    "box_deltas": ((32, 4), 21.5053),
    "box_targets": ((32, 4), 14.3568),
    "mask_logits": ((32, 28, 28), 47204.2108),
    "mask_targets": ((32, 28, 28), 17392.0),
    "centerness_logits": ((1, 1, 24, 24), -89.8634),
    "centerness_deltas": ((1, 4, 24, 24), -637.7167),
    "centerness_anchor_size": ((2,), 39.0385),
    "centerness_stride": 4,
    "ignored_rpn": 0,
    "ignored_box": 4,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _image(name: str, top: int, left: int, h: int, w: int) -> torch.Tensor:
    a = tifffile.imread(Path(sample_data_dir()) / "images" / f"{name}.tif").astype(np.float32)
    lo, hi = np.percentile(a, (1, 99.8))
    a = np.clip((a - lo) / (hi - lo), 0, 1).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None, :, top : top + h, left : left + w]


@pytest.fixture(scope="module")
def network() -> PartialMaskRCNN:
    net = build_mask_rcnn(**SIZES, use_attention=True, use_centerness=True, nucleus_size=16)
    net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True), strict=True)
    return net.eval()


@pytest.mark.parametrize("name", sorted(INFERENCE))
def test_inference_equals_the_reference(network, name):
    areas, score_sum, first = INFERENCE[name]
    with torch.no_grad():
        out = network(_image(name, 40, 30, 100, 120).contiguous())
    assert out.shape == (1, 2, 100, 120)
    lab, score = out[0, 0].numpy().astype(np.int64), out[0, 1].numpy()
    assert lab.max() == len(areas)
    assert np.bincount(lab.ravel(), minlength=len(areas) + 1)[1:].tolist() == areas
    assert float(score.astype(np.float64).sum()) == pytest.approx(score_sum, abs=1e-3)
    for i, (area, cy, cx, s) in enumerate(first, start=1):
        yx = np.argwhere(lab == i)
        assert len(yx) == area
        np.testing.assert_allclose(yx.mean(0), (cy, cx), atol=0.006)
        assert float(score[lab == i][0]) == pytest.approx(s, abs=1e-5)


def test_training_outputs_equal_the_reference(network):
    lab = tifffile.imread(Path(sample_data_dir()) / "labels" / "1b6044e4858a.tif").astype(np.int64)
    x = _image("1b6044e4858a", 32, 32, 96, 96).contiguous()
    y = torch.from_numpy(lab[32:128, 32:128])[None, None]
    net = copy.deepcopy(network).train()
    torch.manual_seed(123)
    out = net(x, y)
    assert set(out) == set(TRAINING)
    for key, expected in TRAINING.items():
        if isinstance(expected, tuple):
            shape, total = expected
            assert tuple(out[key].shape) == shape, key
            assert float(out[key].detach().double().sum()) == pytest.approx(total, rel=1e-4, abs=1e-3), key
        else:
            assert out[key] == expected, key
