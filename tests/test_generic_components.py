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


# name -> (constructor kwargs, input shape, output spatial shape)
NETWORK_CASES = {
    "ImPartialUNet": ({"in_channels": 3, "classes": (2, 2), "features": 8, "depth": 2}, (2, 3, 32, 48), (32, 48)),
    "CanonicalShapeNet": ({"in_channels": 3, "features": 4}, (2, 3, 32, 48), (32, 48)),
    "DilatedResNet": ({"in_channels": 3, "features": 4}, (2, 3, 32, 48), (2, 3)),  # encoder: stride 16
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


def test_every_export_has_a_case():
    assert set(_exported(networks, torch.nn.Module)) == set(NETWORK_CASES)
    assert set(_exported(losses, _Loss)) == set(LOSS_CASES)


@pytest.mark.parametrize("name", sorted(NETWORK_CASES))
def test_network_forward_backward(name):
    kwargs, shape, out_hw = NETWORK_CASES[name]
    net = getattr(networks, name)(**kwargs)
    x = torch.rand(*shape)
    y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape[0] == shape[0] and tuple(y.shape[-2:]) == out_hw
    assert torch.isfinite(y).all()
    y.float().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_loss_is_finite_scalar_with_gradient(name):
    kwargs, call = LOSS_CASES[name]
    loss = getattr(losses, name)(**kwargs)
    pred = torch.randn(2, 4 + 4 * 1, 16, 16, requires_grad=True)
    value = call(loss, pred)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
