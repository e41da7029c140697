"""AverageEnsemble: the mean of independently weighted copies, checked against the members run by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cellseg_monai.networks import AverageEnsemble, ImPartialUNet, ensemble_state_dict


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return ImPartialUNet(in_channels=1, classes=[1, 1], features=4, depth=2).eval()


def test_output_is_the_mean_of_the_members_run_alone() -> None:
    a, b = _net(0), _net(1)
    ensemble = AverageEnsemble(_net(2), size=2).eval()
    ensemble.load_state_dict(ensemble_state_dict([a.state_dict(), b.state_dict()]))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        expected = (a(x) + b(x)) / 2
        got = ensemble(x)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(a(x), b(x))  # the members differ, so the mean is not one of them


def test_size_one_is_the_network() -> None:
    net = _net(0)
    ensemble = AverageEnsemble(_net(3), size=1).eval()
    ensemble.load_state_dict(ensemble_state_dict([net.state_dict()]))
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), net(x))
    assert set(ensemble.state_dict()) == {f"members.0.{k}" for k in net.state_dict()}


def test_bad_members_are_named() -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        AverageEnsemble(_net(0), size=0)
    with pytest.raises(ValueError, match="no members"):
        ensemble_state_dict([])
    small = ImPartialUNet(in_channels=1, classes=[1, 1], features=4, depth=2).state_dict()
    wide = ImPartialUNet(in_channels=1, classes=[1, 1], features=8, depth=2).state_dict()
    with pytest.raises(ValueError, match="member 1: .* has shape"):
        ensemble_state_dict([small, wide])
    deep = ImPartialUNet(in_channels=1, classes=[1, 1], features=4, depth=3).state_dict()
    with pytest.raises(ValueError, match="member 1 has other weights"):
        ensemble_state_dict([small, deep])


def test_non_tensor_output_is_refused() -> None:
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(ValueError, match="averages tensor outputs"):
        AverageEnsemble(Pair(), size=2)(torch.zeros(1))
