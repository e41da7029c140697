"""Networks trained under ``train_precision`` bfloat16 (``FastInferer(training=True)``): the geometry a network
computes inside its forward pass for its own loss (anchors and box targets, decoded locations) stays float32. The
canonical-shape network renders its masks under the autocast as it comes (measured: its bfloat16 training reaches a
higher val F1 in the same minutes, bundle docs); its gradients are checked finite."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer

import cellseg_monai.networks.lacss.network as lacss_network
from cellseg_monai.inferers import FastInferer
from cellseg_monai.networks.canonical_shape import CanonicalShapeNet
from cellseg_monai.networks.lacss import Lacss
from cellseg_monai.networks.mask_rcnn import PartialMaskRCNN

BF16 = FastInferer(SimpleInferer(), precision="bfloat16", training=True)


def test_mask_rcnn_matches_boxes_in_float32_under_bfloat16(monkeypatch):
    torch.manual_seed(0)
    net = PartialMaskRCNN.build(
        backbone_channels=(4, 8, 8, 8), fpn_channels=8, representation_size=16, attention_channels=4
    ).train()
    seen = {}
    original = net._training_outputs

    def spy(feats, anchors, *args, **kwargs):
        seen["anchors"] = anchors.dtype
        return original(feats, anchors, *args, **kwargs)

    monkeypatch.setattr(net, "_training_outputs", spy)
    image = torch.rand(1, 3, 64, 64)
    labels = torch.zeros(1, 1, 64, 64, dtype=torch.long)
    labels[0, 0, 10:22, 12:26] = 1
    out = BF16(image, net, labels)
    assert seen["anchors"] == torch.float32  # IoU matching and box targets in float32
    assert out["rpn_targets"].dtype == torch.float32 and torch.isfinite(out["rpn_targets"]).all()


def test_lacss_matches_locations_in_float32_under_bfloat16(monkeypatch):
    torch.manual_seed(0)
    net = Lacss(3, features=(8, 16, 32), feature_channels=8, seg_hidden=8, crop_size=16).train()
    seen = []
    original = lacss_network.match_locations

    def spy(gt, pred_loc, *args, **kwargs):
        seen.append(pred_loc.dtype)
        return original(gt, pred_loc, *args, **kwargs)

    monkeypatch.setattr(lacss_network, "match_locations", spy)
    points = torch.zeros(1, 1, 32, 32)
    points[0, 0, 8, 8] = 1
    out = BF16(torch.rand(1, 3, 32, 32), net, points=points)
    assert seen == [torch.float32]
    assert out["seg_logits"].dtype == torch.float32  # handed to the loss in float32


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_canonical_shape_training_dict_has_gradients(precision):
    torch.manual_seed(0)
    net = CanonicalShapeNet(features=4, dict_in_training=True).train()
    out = FastInferer(SimpleInferer(), precision=precision, training=True)(torch.rand(2, 1, 32, 32), net)
    (out["combined"].mean() + out["presence"].mean()).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
