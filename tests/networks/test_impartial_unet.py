from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.networks.impartial_unet import ImPartialUNet, class_probabilities, split_output


def _np_class_probs(logits: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Independent reference: softmax over components (axis 1), summed per class group."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    pi = e / e.sum(axis=1, keepdims=True)
    bounds = np.cumsum((0,) + classes)
    return np.stack([pi[:, bounds[k] : bounds[k + 1]].sum(axis=1) for k in range(len(classes))], axis=1)


SHAPE_CASES = [
    # in_channels, classes, depth, spatial
    (1, (2, 2), 1, 8),
    (3, (2, 2), 2, 16),
    (1, (2, 2, 2), 3, 16),
    (3, (1, 3, 2), 2, 12),
]


@pytest.mark.parametrize("in_channels,classes,depth,size", SHAPE_CASES)
def test_output_shapes(in_channels, classes, depth, size):
    torch.manual_seed(0)
    m = sum(classes)
    net = ImPartialUNet(in_channels=in_channels, classes=classes, features=4, depth=depth)
    x = torch.rand(2, in_channels, size, size)
    raw = net(x)
    assert raw.shape == (2, m + m * in_channels, size, size)
    assert torch.isfinite(raw).all()
    logits, means = split_output(raw, classes, in_channels)
    assert logits.shape == (2, m, size, size)
    assert means.shape == (2, m, in_channels, size, size)

    prob_net = ImPartialUNet(in_channels=in_channels, classes=classes, features=4, depth=depth, output="probabilities")
    prob_net.load_state_dict(net.state_dict())
    prob = prob_net(x)
    assert prob.shape == (2, len(classes), size, size)
    torch.testing.assert_close(prob.sum(dim=1), torch.ones(2, size, size))
    ref = _np_class_probs(raw[:, :m].detach().double().numpy(), classes)
    np.testing.assert_allclose(prob.detach().numpy(), ref, atol=1e-5)


def test_gradients_reach_first_layer():
    torch.manual_seed(0)
    net = ImPartialUNet(in_channels=2, classes=(2, 2), features=4, depth=2)
    first = net.encoders[0][0].conv.weight
    net(torch.rand(1, 2, 8, 8)).square().mean().backward()
    assert first.grad is not None
    assert torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0


@pytest.mark.parametrize("size,depth", [((1, 1, 18, 16), 2), ((1, 1, 16, 12), 3), ((1, 1, 7, 8), 1)])
def test_indivisible_input_raises(size, depth):
    net = ImPartialUNet(features=2, depth=depth)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.rand(*size))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"classes": (2,)},
        {"classes": (2, 0)},
        {"depth": 0},
        {"kernel_size": 2},
        {"output": "logits"},
        {"dropout": 1.0},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        ImPartialUNet(**kwargs)


def test_wrong_input_channels_raise():
    with pytest.raises(ValueError, match="expected input"):
        ImPartialUNet(in_channels=3, features=2)(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("in_channels,classes", [(1, (2, 2)), (2, (2, 3)), (3, (1, 2, 2))])
def test_fg_mean_prior(in_channels, classes):
    torch.manual_seed(1)
    m, m0 = sum(classes), classes[0]
    free = ImPartialUNet(in_channels=in_channels, classes=classes, features=4, depth=1, fg_mean_prior=False)
    prior = ImPartialUNet(in_channels=in_channels, classes=classes, features=4, depth=1, fg_mean_prior=True)
    prior.load_state_dict(free.state_dict())
    x = torch.rand(1, in_channels, 8, 8)
    with torch.no_grad():
        r_free = free(x).numpy()
        r_prior = prior(x).numpy()
    # explicit channel arithmetic (component j, channel c at m + j*C + c)
    for c in range(in_channels):
        bg = np.mean([r_free[:, m + j * in_channels + c] for j in range(m0)], axis=0)
        for j in range(m):
            ch = m + j * in_channels + c
            expected = r_free[:, ch] if j < m0 else bg + r_free[:, ch]
            np.testing.assert_allclose(r_prior[:, ch], expected, atol=1e-5)
    np.testing.assert_allclose(r_prior[:, :m], r_free[:, :m])  # logits untouched

    # zero offsets (hand-set head weights): every foreground mean equals the mean of the background means
    with torch.no_grad():
        for j in range(m0, m):
            for c in range(in_channels):
                prior.head.conv.weight[m + j * in_channels + c] = 0.0
                prior.head.conv.bias[m + j * in_channels + c] = 0.0
        r = prior(x).numpy()
    for c in range(in_channels):
        bg = np.mean([r[:, m + j * in_channels + c] for j in range(m0)], axis=0)
        assert np.abs(bg).max() > 1e-4  # the check is not trivially 0 == 0
        for j in range(m0, m):
            np.testing.assert_allclose(r[:, m + j * in_channels + c], bg, atol=1e-6)


def test_split_output_layout_and_probabilities():
    classes, c = (2, 1), 2
    m = 3
    raw = torch.arange(1 * (m + m * c) * 1 * 2, dtype=torch.float32).reshape(1, m + m * c, 1, 2)
    logits, means = split_output(raw, classes, c)
    for j in range(m):
        assert torch.equal(logits[0, j], raw[0, j])
        for ch in range(c):
            assert torch.equal(means[0, j, ch], raw[0, m + j * c + ch])
    # unbatched input works the same
    lg, mu = split_output(raw[0], classes, c)
    assert torch.equal(lg, logits[0]) and torch.equal(mu, means[0])

    hand = torch.tensor([0.0, 1.0, -2.0]).reshape(1, 3, 1, 1)
    e = [1.0, np.e, np.exp(-2.0)]
    expected = [(e[0] + e[1]) / sum(e), e[2] / sum(e)]
    np.testing.assert_allclose(class_probabilities(hand, classes).flatten().numpy(), expected, rtol=1e-6)
    # one implementation, also reachable from the class
    assert ImPartialUNet.class_probabilities is class_probabilities
    assert ImPartialUNet.split_output is split_output
    with pytest.raises(ValueError, match="channels"):
        split_output(raw[:, :-1], classes, c)
