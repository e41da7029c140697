"""TorchScript export (``monai.bundle ckpt_export`` = ``convert_to_torchscript`` = ``torch.jit.script``) of every
bundle's ``network_def``: the saved and reloaded module gives the eager network's outputs on a real image and has
its state-dict keys; plus the TorchScript forms of the helpers that replace non-scriptable code (MONAI box ops,
SciPy connected components)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.bundle import ConfigParser
from monai.data.box_utils import box_iou as monai_box_iou
from monai.networks.utils import convert_to_torchscript
from scipy import ndimage

from cellseg_monai.data import is_image_file, read_image, sample_data_dir
from cellseg_monai.networks.canonical_shape import CanonicalShapeNet
from cellseg_monai.networks.mask_rcnn.box_ops import box_iou, decode_boxes
from cellseg_monai.networks.mask_rcnn.centerness import component_peaks

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
# (bundle, network_def overrides): every bundle as configured, then the networks whose in-network post-processing
# finds nothing with random weights again with thresholds that let it run (proposals, masks, NMS, pasting)
CASES = [
    ("canonical_shape", {}),
    ("impartial", {}),
    ("lacss", {}),
    ("partial_maskrcnn", {}),
    ("sparse_seunet", {}),
    ("supervised_unet", {}),
    ("lacss", {"score_threshold": 0.0, "mask_threshold": 0.0, "nms_distance": 24.0}),
    (
        "partial_maskrcnn",
        {
            "score_threshold": 0.0,
            "centerness_threshold": 0.0,
            "rpn_pre_nms_top_n": [200, 200],
            "detections_per_image": 50,
        },
    ),
    ("sparse_seunet", {"score_threshold": 0.0, "mask_threshold": 0.0, "min_size": 1, "decoder": "sparse"}),
]


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """(1, 3, 128, 128) crop of the first sample image, scaled to [0, 1]."""
    root = Path(sample_data_dir()) / "images"
    arr = read_image(sorted(p for p in root.iterdir() if is_image_file(p))[0]).astype(np.float32)
    arr = np.repeat(arr[..., None], 3, axis=-1) if arr.ndim == 2 else arr[..., :3]
    arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6)
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
    top, left = (x.shape[-2] - 128) // 2, (x.shape[-1] - 128) // 2
    return x[..., top : top + 128, left : left + 128].contiguous()


def _network(bundle: str, overrides: dict) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(BUNDLES / bundle / "configs" / "inference.json")
    for key, value in overrides.items():
        parser[f"network_def#{key}"] = value
    torch.manual_seed(0)
    return parser.get_parsed_content("network_def").eval()


def _tensors(out, name: str = "out") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) tensor / dict / tuple / list output, by its path."""
    if isinstance(out, torch.Tensor):
        return {name: out}
    if isinstance(out, dict):
        items = out.items()
    elif isinstance(out, (list, tuple)):
        items = enumerate(out)
    else:
        raise TypeError(f"{name}: unexpected output type {type(out).__name__}")
    flat: dict[str, torch.Tensor] = {}
    for key, value in items:
        flat.update(_tensors(value, f"{name}[{key!r}]"))
    return flat


def _assert_same_outputs(eager, scripted) -> None:
    eager, scripted = _tensors(eager), _tensors(scripted)
    assert list(scripted) == list(eager)
    for key, e in eager.items():
        s = scripted[key]
        assert s.shape == e.shape and s.dtype == e.dtype, key
        if e.numel():
            assert (s.double() - e.double()).abs().max() <= 1e-4, key


@pytest.mark.parametrize("bundle,overrides", CASES, ids=[f"{b}{'-thresholds' if o else ''}" for b, o in CASES])
def test_bundle_network_exports_and_matches_eager(bundle, overrides, image, tmp_path):
    net = _network(bundle, overrides)
    path = tmp_path / f"{bundle}.ts"
    convert_to_torchscript(net, filename_or_obj=path)
    scripted = torch.jit.load(path)
    assert list(scripted.state_dict()) == list(net.state_dict())
    with torch.no_grad():
        eager_out = net(image)
        _assert_same_outputs(eager_out, scripted(image))
    if overrides:  # the thresholds did let the post-processing produce instances
        assert _tensors(eager_out)["out"][:, 0].max() > 0


def test_canonical_shape_scripted_methods_of_the_inferer_and_chunked_rendering(image):
    """``CanonicalShapePredictor`` calls ``predict_parameters`` / ``render_instances``; ``render`` chunks without
    gradients."""
    torch.manual_seed(0)
    net = CanonicalShapeNet(in_channels=3, features=8).eval()
    net.render_chunk_points = 10 * 32 * 32  # 10 instances per chunk at 32 x 32
    scripted = torch.jit.script(net)
    x = image[..., :64, :64]
    with torch.no_grad():
        params = net.predict_parameters(x)
        _assert_same_outputs(params, scripted.predict_parameters(x))
        _assert_same_outputs(net.render_instances(params, (40, 24)), scripted.render_instances(params, (40, 24)))
        _assert_same_outputs(net.render(params, (32, 32)), scripted.render(params, (32, 32)))


def test_box_ops_are_monais_bit_for_bit():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64, torch.int64):
        corner = torch.rand(20, 2) * 100
        boxes = torch.cat([corner, corner + torch.rand(20, 2) * 30], 1)
        boxes = boxes.round().to(dtype) if dtype == torch.int64 else boxes.to(dtype)
        assert torch.equal(box_iou(boxes, boxes[:7]), monai_box_iou(boxes, boxes[:7]))
        assert torch.equal(torch.jit.script(box_iou)(boxes, boxes[:7]), monai_box_iou(boxes, boxes[:7]))
    reference = torch.cat([corner, corner + 1 + torch.rand(20, 2) * 30], 1)
    deltas = torch.randn(20, 4) * 2
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        expected = BoxCoder(weights=weights).decode_single(deltas, reference)
        assert torch.equal(decode_boxes(deltas, reference, weights), expected)
        assert torch.equal(torch.jit.script(decode_boxes)(deltas, reference, weights), expected)


def test_scripted_component_peaks_equal_scipys():
    """Under TorchScript the centerness peaks come from torch (SciPy in eager mode): same components, same order,
    same peaks (maps without ties)."""
    scripted = torch.jit.script(component_peaks)
    rng = np.random.default_rng(0)
    for trial in range(30):
        prob = ndimage.uniform_filter(rng.random(tuple(rng.integers(1, 40, 2))), 3).astype(np.float32)
        threshold = float(rng.choice([0.4, 0.5, 0.6]))
        labels, n = ndimage.label(prob > threshold, structure=np.ones((3, 3)))
        expected = [r * prob.shape[1] + c for r, c in ndimage.maximum_position(prob, labels, range(1, n + 1))]
        assert scripted(torch.from_numpy(prob), threshold).tolist() == expected, trial
        assert component_peaks(torch.from_numpy(prob), threshold).tolist() == expected, trial
    # a tied maximum: the first pixel in raster order
    tied = torch.tensor([[0.0, 0.9, 0.9], [0.9, 0.0, 0.0], [0.0, 0.0, 0.7]])
    assert scripted(tied, 0.5).tolist() == [1, 8]
