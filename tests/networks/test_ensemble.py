"""AverageEnsemble / MixtureAverageEnsemble: means of independently weighted copies, checked against the members run
by hand (MixtureAverageEnsemble: their class probabilities, computed in numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cellseg_monai.networks import AverageEnsemble, ImPartialUNet, MixtureAverageEnsemble, ensemble_state_dict


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


def _numpy_class_probabilities(raw: torch.Tensor, classes: list[int]) -> np.ndarray:
    """Softmax over the component logits, summed within each class, written out in numpy."""
    logits = raw[:, : sum(classes)].double().numpy()
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    pi = e / e.sum(axis=1, keepdims=True)
    bounds = np.cumsum([0] + classes)
    return np.stack([pi[:, bounds[k] : bounds[k + 1]].sum(axis=1) for k in range(len(classes))], axis=1)


def _mixture_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return ImPartialUNet(in_channels=2, classes=[2, 3], features=4, depth=2).eval()


def test_mixture_ensemble_averages_class_probabilities() -> None:
    a, b = _mixture_net(0), _mixture_net(1)
    ensemble = MixtureAverageEnsemble(_mixture_net(2), size=2, classes=[2, 3]).eval()
    ensemble.load_state_dict(ensemble_state_dict([a.state_dict(), b.state_dict()]))
    x = torch.rand(1, 2, 24, 24)
    with torch.no_grad():
        raw_a, raw_b, got = a(x), b(x), ensemble(x)
    expected = (_numpy_class_probabilities(raw_a, [2, 3]) + _numpy_class_probabilities(raw_b, [2, 3])) / 2
    np.testing.assert_allclose(_numpy_class_probabilities(got, [2, 3]), expected, atol=1e-6)
    assert got.shape == raw_a.shape  # the raw layout: 5 logits + 5 * 2 means
    torch.testing.assert_close(got[:, 5:], raw_a[:, 5:])  # member 0's component means
    # the mean of raw logits is another thing: it mixes unrelated components
    raw_mean = _numpy_class_probabilities((raw_a + raw_b) / 2, [2, 3])
    assert np.abs(raw_mean - expected).max() > 1e-3


def test_mixture_ensemble_ignores_the_order_of_components_within_a_class() -> None:
    """A member whose foreground components are listed in another order is the same model to the ensemble."""
    a, b = _mixture_net(0), _mixture_net(1)
    b_swapped = _mixture_net(1)
    state = b.state_dict()
    head = [k for k in state if state[k].ndim >= 1 and state[k].shape[0] == 5 + 5 * 2][-2:]  # last conv weight, bias
    order = [0, 1, 4, 2, 3] + [5 + 2 * j + c for j in [0, 1, 4, 2, 3] for c in range(2)]
    b_swapped.load_state_dict({k: (v[order] if k in head else v) for k, v in state.items()})
    x = torch.rand(1, 2, 24, 24)
    with torch.no_grad():
        assert not torch.allclose(b(x)[:, :5], b_swapped(x)[:, :5])  # the swap changed the raw output
        outputs = []
        for member in (b, b_swapped):
            ensemble = MixtureAverageEnsemble(_mixture_net(2), size=2, classes=[2, 3]).eval()
            ensemble.load_state_dict(ensemble_state_dict([a.state_dict(), member.state_dict()]))
            outputs.append(_numpy_class_probabilities(ensemble(x), [2, 3]))
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)


def test_mixture_ensemble_refuses_bad_classes() -> None:
    with pytest.raises(ValueError):
        MixtureAverageEnsemble(_mixture_net(0), size=2, classes=[2])
