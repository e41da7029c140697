from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.apps.detection.utils.anchor_utils import AnchorGenerator
from monai.apps.detection.utils.ATSS_matcher import Matcher
from monai.data.box_utils import non_max_suppression

import cellseg_monai.networks.mask_rcnn as mask_rcnn
from cellseg_monai.networks.mask_rcnn import (
    IoUMatcher,
    MaskHead,
    MaskRCNN,
    PartialMaskRCNN,
    RPNHead,
    build_mask_rcnn,
    default_parts,
    nms,
)
from cellseg_monai.networks.mask_rcnn.box_ops import box_iou
from cellseg_monai.postprocessing.mask_paste import paste_masks

TINY = {"backbone_channels": (4, 8, 8, 8), "fpn_channels": 8, "representation_size": 16, "attention_channels": 4}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _np_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (N, 4) and (M, 4) boxes (y0, x0, y1, x1), written out independently."""
    y0 = np.maximum(a[:, None, 0], b[None, :, 0])
    x0 = np.maximum(a[:, None, 1], b[None, :, 1])
    y1 = np.minimum(a[:, None, 2], b[None, :, 2])
    x1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_anchor_grid_hand_computed():
    net = MaskRCNN.build(**TINY)
    img = torch.zeros(1, 3, 32, 48)
    feats = [torch.zeros(1, 8, 32 // s, 48 // s) for s in (4, 8, 16)]
    anchors = net.anchor_generator(img, feats)[0]
    a = net.num_anchors
    assert a == 6 and anchors.shape == (a * (8 * 12 + 4 * 6 + 2 * 3), 4)
    # first location of P2: centre (2, 2); its square anchors of side 8 and 16 (aspect 1) are among the first six
    first = anchors[:a].numpy()
    for side in (8, 16):
        assert np.any(np.all(np.isclose(first, [2 - side / 2, 2 - side / 2, 2 + side / 2, 2 + side / 2]), axis=1))
    # second location (row 0, col 1): same shapes shifted by the stride 4 in x
    np.testing.assert_allclose(anchors[a : 2 * a, [1, 3]].numpy(), first[:, [1, 3]] + 4)
    np.testing.assert_allclose(anchors[a : 2 * a, [0, 2]].numpy(), first[:, [0, 2]])


@pytest.mark.parametrize("coder", ["rpn_coder", "box_coder"])
def test_box_coding_round_trip(coder):
    net = MaskRCNN.build(**TINY)
    c = getattr(net, coder)
    g = torch.Generator().manual_seed(1)
    anchors = torch.rand(20, 2, generator=g) * 50
    anchors = torch.cat([anchors, anchors + 4 + torch.rand(20, 2, generator=g) * 30], 1)
    gt = torch.rand(20, 2, generator=g) * 50
    gt = torch.cat([gt, gt + 2 + torch.rand(20, 2, generator=g) * 30], 1)
    deltas = c.encode_single(gt, anchors)
    torch.testing.assert_close(c.decode_single(deltas, anchors), gt, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(c.decode_single(torch.zeros_like(deltas), anchors), anchors)
    # hand check of one encoding: centre offset / size times the weights, log size ratio times the weights
    w = torch.tensor(c.weights)
    a, b = anchors[0], gt[0]
    ah, aw = a[2] - a[0], a[3] - a[1]
    want = torch.stack(
        [
            w[0] * ((b[0] + b[2]) / 2 - (a[0] + a[2]) / 2) / ah,
            w[1] * ((b[1] + b[3]) / 2 - (a[1] + a[3]) / 2) / aw,
            w[2] * torch.log((b[2] - b[0]) / ah),
            w[3] * torch.log((b[3] - b[1]) / aw),
        ]
    )
    torch.testing.assert_close(deltas[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("thr, max_keep", [(0.5, -1), (0.7, 10), (0.3, 3), (0.0, -1)])
def test_nms_equals_monai(thr, max_keep):
    g = torch.Generator().manual_seed(3)
    tl = torch.rand(200, 2, generator=g) * 60
    boxes = torch.cat([tl, tl + 2 + torch.rand(200, 2, generator=g) * 20], 1)
    scores = torch.rand(200, generator=g)
    scores[5] = scores[6]  # a tie: both keep the first by stable order
    ref = torch.as_tensor(non_max_suppression(boxes, scores, thr, max_keep))
    assert nms(boxes, scores, thr, max_keep).tolist() == ref.tolist()
    assert nms(boxes[:0], scores[:0], thr).numel() == 0


def _nms_one_matrix(boxes, scores, thr, max_keep=-1):
    """The NMS before it went by blocks: the whole sorted IoU matrix, then the greedy pass over its rows."""
    order = torch.argsort(scores, descending=True, stable=True)
    rows = box_iou(boxes[order], boxes[order]) > thr
    suppressed = torch.zeros(order.numel(), dtype=torch.bool)
    keep = []
    for i in range(order.numel()):
        if suppressed[i]:
            continue
        keep.append(i)
        if 0 < max_keep <= len(keep):
            break
        suppressed |= rows[i]
    return order[keep]


@pytest.mark.parametrize("seed", range(8))
def test_nms_blocks_equal_one_matrix(seed):
    g = torch.Generator().manual_seed(seed)
    n = 50 + 60 * seed
    tl = torch.rand(n, 2, generator=g) * 150
    boxes = torch.cat([tl, tl + 1 + torch.rand(n, 2, generator=g) * 40], 1)
    scores = torch.rand(n, generator=g)
    if seed % 2:
        scores = (scores * 8).round()  # many ties
    for thr, max_keep in [(0.7, -1), (0.5, 40), (0.3, 1), (0.0, -1)]:
        want = _nms_one_matrix(boxes, scores, thr, max_keep)
        for block in (1, 7, 256):
            assert torch.equal(nms(boxes, scores, thr, max_keep, block), want)


def test_iou_matcher_thresholds_and_low_quality():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 -> match 0
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 -> between
            [0.0, 0.0, 10.0, 2.0],  # IoU 0.2 -> background
            [50.0, 50.0, 60.0, 60.0],  # IoU 0 -> background
        ]
    )
    _, m = IoUMatcher(0.7, 0.3)(gt, anchors, [], 1)
    assert m.tolist() == [0, Matcher.BETWEEN_THRESHOLDS, Matcher.BELOW_LOW_THRESHOLD, Matcher.BELOW_LOW_THRESHOLD]
    _, m = IoUMatcher(0.7, 0.3)(gt, anchors[1:], [], 1)  # best anchor only 0.5: kept as a low-quality match
    assert m[0] == 0
    _, m = IoUMatcher(0.7, 0.3, allow_low_quality_matches=False)(gt, anchors[1:], [], 1)
    assert m[0] == Matcher.BETWEEN_THRESHOLDS


def _scene():
    lab = torch.zeros((1, 1, 64, 64), dtype=torch.long)
    lab[0, 0, 8:20, 8:20] = 1  # one labelled square nucleus; an unlabelled one would sit at (40:56, 40:56)
    return torch.rand(1, 3, 64, 64), lab


def test_training_outputs_are_consistent():
    torch.manual_seed(0)
    net = PartialMaskRCNN.build(**TINY).train()
    img, lab = _scene()
    out = net(img, lab)
    assert out["rpn_logits"].shape == out["rpn_labels"].shape
    assert out["rpn_deltas"].shape == out["rpn_targets"].shape == (int(out["rpn_labels"].sum()), 4)
    n_pos = int(out["box_labels"].sum())
    assert n_pos >= 1  # the labelled box itself is always a candidate proposal
    assert out["box_deltas"].shape == out["box_targets"].shape == (n_pos, 4)
    assert out["mask_logits"].shape == out["mask_targets"].shape == (n_pos, 28, 28)
    assert set(torch.unique(out["mask_targets"]).tolist()) <= {0.0, 1.0}
    # the box-head positive equal to the labelled box has zero regression target and an all-ones mask target
    zero = torch.nonzero(out["box_targets"].abs().sum(1) < 1e-6).squeeze(1)
    assert zero.numel() >= 1 and (out["mask_targets"][zero] == 1).all()
    assert out["centerness_logits"].shape == (1, 1, 16, 16)
    total = sum(v.sum() for k, v in out.items() if torch.is_tensor(v) and v.requires_grad)
    total.backward()
    assert net.rpn_cls.weight.grad is not None and net.box_cls.weight.grad is not None
    with pytest.raises(ValueError, match="labels"):
        net(img)


def test_negatives_matching_centerness_detections_are_ignored(monkeypatch):
    torch.manual_seed(0)
    net = PartialMaskRCNN.build(**TINY).train()
    img, lab = _scene()
    pred = torch.tensor([[40.0, 40.0, 56.0, 56.0]])  # the module "found" the unlabelled nucleus
    props = torch.tensor([[40.0, 40.0, 56.0, 56.0], [41.0, 40.0, 56.0, 57.0], [0.0, 40.0, 10.0, 60.0]])
    monkeypatch.setattr(net.centerness, "detect", lambda *a, **k: [(pred, torch.ones(1))])
    monkeypatch.setattr(net, "proposals", lambda *a, **k: [props])
    out = net(img, lab)
    feats = [torch.zeros(1, 1, 64 // s, 64 // s) for s in (4, 8, 16)]
    anchors = AnchorGenerator(((8, 16), (24, 32), (48, 64)), ((0.5, 1.0, 2.0),) * 3)(img, feats)[0].numpy()
    gt = np.array([[8.0, 8.0, 20.0, 20.0]])
    negative = _np_iou(anchors, gt)[:, 0] < 0.3
    expected_rpn = int((negative & (_np_iou(anchors, pred.numpy())[:, 0] >= 0.5)).sum())
    assert expected_rpn > 0 and out["ignored_rpn"] == expected_rpn
    # proposals 0 and 1 overlap the detection (IoU 1 and 0.88), proposal 2 does not: two ignored
    assert out["ignored_box"] == 2
    assert int(out["box_labels"].numel()) <= 2  # only the labelled box and proposal 2 can be sampled


def test_inference_single_tensor_any_size():
    torch.manual_seed(0)
    net = PartialMaskRCNN.build(**TINY, detections_per_image=20).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, 45, 70))
    assert y.shape == (2, 2, 45, 70) and y.dtype == torch.float32
    labels, score = y[:, 0], y[:, 1]
    assert torch.equal(labels, labels.round()) and labels.min() >= 0 and labels.max() <= 20
    assert ((score > 0) == (labels > 0)).all() and score.max() <= 1


def test_plain_mask_rcnn_ignores_no_negative():
    torch.manual_seed(0)
    net = MaskRCNN.build(**{**TINY, "attention_channels": None}).train()
    assert type(net) is MaskRCNN and len(net.attention) == 0 and not hasattr(net, "centerness")
    img, lab = _scene()
    out = net(img, lab)
    assert "centerness_logits" not in out and out["ignored_rpn"] == 0 and out["ignored_box"] == 0
    assert len(net.eval()(img)) == 1


def test_parts_passed_in_are_the_network_layers():
    parts = default_parts(**TINY)
    parts["mask_head"] = MaskHead(8, convs=2)
    net = MaskRCNN(**parts, min_area=9)
    assert net.mask_head is parts["mask_head"] and net.backbone is parts["backbone"] and net.fpn is parts["fpn"]
    assert net.rpn_cls is parts["rpn_head"].cls and net.box_head is parts["box_head"].trunk
    assert net.rpn_sampler is parts["rpn_head"].sampler and net.box_matcher is parts["box_head"].matcher
    assert net.min_area == 9 and net.detections_per_image == parts["box_head"].detections_per_image
    # the layer names (= the state_dict keys of the shipped weights) do not depend on the parts' own names
    assert {k.split(".")[0] for k in net.state_dict()} == {
        "backbone", "fpn", "attention", "rpn_conv", "rpn_cls", "rpn_reg", "box_head", "box_cls", "box_reg", "mask_head"
    }  # fmt: skip
    assert net.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_parts_that_do_not_fit_are_refused():
    parts = default_parts(**TINY)
    parts["rpn_head"] = RPNHead(8, num_anchors=3)  # the generator makes 2 sizes × 3 ratios = 6 per location
    with pytest.raises(ValueError, match="anchors"):
        MaskRCNN(**parts)
    with pytest.raises(ValueError, match="one module per FPN level"):
        MaskRCNN(**{**default_parts(**TINY), "attention": [torch.nn.Identity()]})


@pytest.mark.parametrize("flags,cls", [({}, PartialMaskRCNN), ({"use_centerness": False}, MaskRCNN)])
def test_version1_call_builds_the_same_network(flags, cls):
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="build_mask_rcnn"):
        old = MaskRCNN(**TINY, **flags)
    torch.manual_seed(0)
    new = build_mask_rcnn(**TINY, **flags)
    assert type(old) is type(new) is cls
    assert list(old.state_dict()) == list(new.state_dict())
    for k, v in new.state_dict().items():
        assert torch.equal(old.state_dict()[k], v), k
    assert mask_rcnn.MaskRCNN is MaskRCNN  # the class itself, not a stand-in


def test_pretrained_path(tmp_path):
    a = PartialMaskRCNN.build(**TINY)
    path = tmp_path / "w.pt"
    torch.save(a.state_dict(), path)
    b = PartialMaskRCNN.build(**TINY, pretrained_path=str(path))
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v)
    with pytest.raises(FileNotFoundError):
        MaskRCNN.build(**TINY, pretrained_path=str(tmp_path / "missing.pt"))


def test_paste_masks_by_score():
    masks = torch.ones((2, 4, 4))
    boxes = torch.tensor([[2.0, 2.0, 6.0, 6.0], [4.0, 4.0, 8.0, 8.0]])
    labels, score = paste_masks(masks, boxes, torch.tensor([0.4, 0.9]), (10, 10))
    expected = np.zeros((10, 10), int)
    expected[2:6, 2:6] = 2  # lower score: id 2, loses the overlap
    expected[4:8, 4:8] = 1  # higher score: id 1
    np.testing.assert_array_equal(labels.numpy(), expected)
    np.testing.assert_allclose(score.numpy(), np.where(expected == 1, 0.9, np.where(expected == 2, 0.4, 0.0)))
    half = torch.zeros((1, 4, 4))
    half[0, :, :2] = 1  # left half of the mask -> left half of the box
    labels, _ = paste_masks(half, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([1.0]), (8, 8))
    assert labels[:, :4].eq(1).all() and labels[:, 4:].eq(0).all()


@pytest.mark.parametrize("cls", [MaskRCNN, PartialMaskRCNN])
def test_scripted_network_equals_eager(cls, tmp_path):
    from monai.networks.utils import convert_to_torchscript

    torch.manual_seed(0)
    net = cls.build(**TINY, score_threshold=0.0, detections_per_image=10).eval()
    if cls is PartialMaskRCNN:
        net.centerness.threshold = 0.0  # every component detected: the extra proposals are exercised
    scripted = convert_to_torchscript(net, filename_or_obj=tmp_path / "m.ts")
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        eager = net(x)
        assert eager[:, 0].max() > 0
        torch.testing.assert_close(scripted(x), eager)


def test_matches_of_an_image_without_labelled_boxes_stay_on_the_samples_device():
    """MONAI's Matcher answers an image without boxes on the CPU whatever the device; on a GPU that broke training
    on crops without a labelled nucleus. The meta device stands in for a GPU here."""
    from cellseg_monai.networks.mask_rcnn.network import match_on_device

    net = MaskRCNN(in_channels=1)
    anchors = torch.zeros((6, 4), device="meta")
    empty = torch.zeros((0, 4), device="meta")
    _, raw = net.rpn_matcher(empty, anchors, [], 1)
    assert raw.device.type == "cpu"  # MONAI's behaviour this guards against
    matches = match_on_device(net.rpn_matcher, empty, anchors, 1)
    assert matches.device.type == "meta" and matches.shape == (6,)
    boxes, cand = torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([[0.0, 0.0, 4.0, 4.0], [10.0, 10.0, 14.0, 14.0]])
    assert match_on_device(net.box_matcher, boxes, cand, 1).tolist() == [0, Matcher.BELOW_LOW_THRESHOLD]
