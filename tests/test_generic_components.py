"""Every exported network and loss gets the basic checks the day it is exported (STYLE habit 11).

A new network or loss must be added to the case tables below, or ``test_every_export_has_a_case`` fails.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.nn.modules.loss import _Loss

import cellseg_monai.losses as losses
import cellseg_monai.networks as networks


def _exported(module, base):
    return sorted(
        n for n in module.__all__ if inspect.isclass(getattr(module, n)) and issubclass(getattr(module, n), base)
    )


def _labels(b=2, h=64, w=64):
    lab = torch.zeros(b, 1, h, w, dtype=torch.long)
    lab[:, :, 5:15, 5:15] = 1
    lab[:, :, 30:45, 20:40] = 2
    return lab


def _tensors(out):
    """The floating-point tensors of a network output (tensor, tuple or dict) — what a loss can backpropagate."""
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else [out]
    return [t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]


def _mask_rcnn_loss(net, x):  # training needs the labelled exemplars; the loss is the network's training signal
    return losses.MaskRCNNLoss()(net.train()(x, _labels()), _labels())


def _point_map(b=2, h=32, w=48):
    pm = torch.zeros(b, 1, h, w)
    pm[:, 0, 10, 10], pm[:, 0, 20, 30] = 1, 2
    return pm


# name -> (constructor kwargs, input shape, output spatial shape (None: not an image), optional run(net, x))
NETWORK_CASES = {
    "ImPartialUNet": ({"in_channels": 3, "classes": (2, 2), "features": 8, "depth": 2}, (2, 3, 32, 48), (32, 48)),
    "AverageEnsemble": (
        {"network": networks.ImPartialUNet(in_channels=3, classes=(2, 2), features=8, depth=2), "size": 2},
        (2, 3, 32, 48),
        (32, 48),
    ),
    "MixtureAverageEnsemble": (
        {
            "network": networks.ImPartialUNet(in_channels=3, classes=(2, 2), features=8, depth=2),
            "size": 2,
            "classes": (2, 2),
        },
        (2, 3, 32, 48),
        (32, 48),
    ),
    "CanonicalShapeNet": ({"in_channels": 3, "features": 4}, (2, 3, 32, 48), (32, 48)),
    "DilatedResNet": ({"in_channels": 3, "features": 4}, (2, 3, 32, 48), (2, 3)),  # encoder: stride 16
    "SEUNet": ({"in_channels": 3, "features": (4, 8, 16)}, (2, 3, 32, 48), (32, 48)),
    "SEConvBlock": ({"in_channels": 3, "out_channels": 4, "se_reduction": 2}, (2, 3, 32, 48), (32, 48)),
    "SparseSEUNet": ({"in_channels": 3, "features": (4, 8, 16), "num_instances": 5}, (2, 3, 32, 48), (32, 48)),
    "InstanceActivationBranch": ({"in_channels": 8, "num_instances": 5}, (2, 8, 16, 16), (16, 16)),
    "SmallBackbone": ({"in_channels": 3, "channels": (4, 8, 8, 16)}, (2, 3, 32, 48), None),
    "CenternessModule": ({"in_channels": 3, "hidden_channels": 8}, (2, 3, 32, 48), (32, 48)),
    "Lacss": (
        {"in_channels": 3, "features": (4, 8, 16), "feature_channels": 8, "seg_hidden": 8, "crop_size": 16},
        (2, 3, 32, 48),
        None,  # training output: crop logits, not image-sized
        lambda net, x: net.train()(x, points=_point_map()),
    ),
    "LacssBackbone": ({"in_channels": 3, "features": (4, 8, 16), "out_channels": 8}, (2, 3, 32, 48), None),
    "LacssAuxNet": ({"in_channels": 3, "hidden": 4}, (2, 3, 32, 48), (32, 48)),
    "MaskRCNN": (
        {"in_channels": 3, "backbone_channels": (4, 8, 8, 16), "fpn_channels": 8, "attention_channels": 8},
        (2, 3, 64, 64),
        None,
        _mask_rcnn_loss,
    ),  # fmt: skip
}


def _impartial_target(b=2, c=1, h=16, w=16):
    scribble = torch.zeros(b, 1, h, w, dtype=torch.long)
    scribble[:, :, 2:5, 2:5] = 1
    scribble[:, :, 9:12, 9:12] = 2
    mask = torch.zeros(b, 1, h, w)
    mask[:, :, ::4, ::4] = 1
    return {"image": torch.rand(b, c, h, w), "blind_mask": mask, "scribble": scribble}


# name -> (constructor kwargs, callable(pred) -> loss value)
LOSS_CASES = {
    "ImPartialLoss": ({"classes": (2, 2), "in_channels": 1}, lambda loss, p: loss(p, _impartial_target())),
    "MixtureReconstructionLoss": (
        {"classes": (2, 2), "in_channels": 1},
        lambda loss, p: loss(p, torch.rand(2, 1, 16, 16), torch.ones(2, 1, 16, 16)),
    ),
    "ScribbleLoss": ({"classes": (2, 2)}, lambda loss, p: loss(p, _impartial_target()["scribble"])),
    "CanonicalShapeLoss": (
        {},
        lambda loss, p: loss(
            torch.sigmoid(p[:, :1]),
            {"mask": (torch.rand(2, 1, 16, 16) > 0.5).float(), "count": torch.tensor([3.0, 5.0])},
            presence=torch.sigmoid(p[:, 1].flatten(1)),
        ),
    ),
}


def _mask_rcnn_output(p):
    """MaskRCNN's training dict (see MaskRCNN.forward) made of slices of the generic prediction."""
    flat = p.flatten()
    return {
        "rpn_logits": flat[:32], "rpn_labels": (torch.arange(32) % 2).float(),
        "rpn_deltas": flat[32:48].view(4, 4), "rpn_targets": torch.zeros(4, 4),
        "box_logits": flat[48:64].view(8, 2), "box_labels": torch.arange(8) % 2,
        "box_deltas": flat[64:80].view(4, 4), "box_targets": torch.zeros(4, 4),
        "mask_logits": flat[:3136].view(4, 28, 28), "mask_targets": (torch.rand(4, 28, 28) > 0.5).float(),
    }  # fmt: skip


def _lacss_output(p):
    """Lacss's training dict (see Lacss.forward) cut from the generic prediction."""
    return {
        "lpn_logits": p[:, :1, :4, :4], "lpn_offsets": p[:, 1:3, :4, :4], "lpn_stride": 4,
        "seg_logits": p[:1, 3:4], "batch_index": torch.tensor([0]), "centers": torch.tensor([[8, 8]]),
        "gt_points": torch.tensor([[8.0, 8.0]]), "point_ids": torch.tensor([1]), "image_shape": (16, 16), "padded_shape": (16, 16), "aux_logits": p[:, 4:5],
    }  # fmt: skip


def _lacss_target():
    target = torch.zeros(2, 2, 16, 16)
    target[0, 0, 8, 8] = 1
    target[:, 1, 4:12, 4:12] = 1
    return target


def _sparse_prediction(p):
    return {
        "masks": p[:, :4],
        "logits": p[:, 4:8].mean((2, 3))[..., None],
        "objectness": p[:, 4:8].amax((2, 3))[..., None],
        "semantic": p[:, 4:8],
    }


LOSS_CASES.update(
    {
        "FocalOverlapLoss": ({}, lambda loss, p: loss(p[:, :1], 0.1 + 0.9 * torch.rand(2, 1, 16, 16))),
        "MultiHeadBCELoss": ({"weights": [1.0] * 8}, lambda loss, p: loss(p, torch.rand(2, 8, 16, 16).round())),
        "SEUNetLoss": ({}, lambda loss, p: loss(p[:, :4], torch.rand(2, 4, 16, 16))),
        "SparseInstanceLoss": ({}, lambda loss, p: loss(_sparse_prediction(p), _labels(h=16, w=16))),
        "SparseSEUNetLoss": (
            {},
            lambda loss, p: loss(
                _sparse_prediction(p), {"label": _labels(h=16, w=16), "semantic": torch.rand(2, 4, 16, 16)}
            ),
        ),
        "MaskRCNNLoss": ({}, lambda loss, p: loss(_mask_rcnn_output(p), _labels())),
        "LacssLoss": ({}, lambda loss, p: loss(_lacss_output(p), _lacss_target())),
    }
)


def test_every_export_has_a_case():
    assert set(_exported(networks, torch.nn.Module)) == set(NETWORK_CASES)
    assert set(_exported(losses, _Loss)) == set(LOSS_CASES)


@pytest.mark.parametrize("name", sorted(NETWORK_CASES))
def test_network_forward_backward(name):
    kwargs, shape, out_hw, *run = NETWORK_CASES[name]
    net = getattr(networks, name)(**kwargs)
    x = torch.rand(*shape)
    out = run[0](net, x) if run else net(x)
    tensors = _tensors(out)
    assert tensors and all(torch.isfinite(t).all() for t in tensors)
    if out_hw is not None:  # per-pixel outputs keep the input's batch and (scaled) spatial size
        images = [t for t in tensors if t.ndim == 4]
        assert images and all(t.shape[0] == shape[0] and tuple(t.shape[-2:]) == out_hw for t in images)
    sum(t.float().mean() for t in tensors).backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is None or torch.isfinite(g).all() for g in grads)
    assert sum(g is not None for g in grads) >= 0.8 * len(grads), "most parameters must get a gradient"


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_loss_is_finite_scalar_with_gradient(name):
    kwargs, call = LOSS_CASES[name]
    loss = getattr(losses, name)(**kwargs)
    pred = torch.randn(2, 4 + 4 * 1, 16, 16, requires_grad=True)
    value = call(loss, pred)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
