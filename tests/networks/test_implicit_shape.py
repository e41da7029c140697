from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.networks.canonical_shape.implicit_shape import ImplicitShapeMLP


def _np_forward(mlp: ImplicitShapeMLP, coords: np.ndarray) -> np.ndarray:
    """Independent numpy re-implementation of Sec. 2.1: (x, y, r) -> 8 -> [., in] -> 4 -> [., in] -> 1, -softplus."""
    w = {k: v.detach().double().numpy() for k, v in mlp.state_dict().items()}
    u = np.concatenate([coords, np.hypot(coords[..., :1], coords[..., 1:2])], axis=-1)
    h1 = np.maximum(u @ w["fc1.weight"].T + w["fc1.bias"], 0)
    h2 = np.maximum(np.concatenate([h1, u], -1) @ w["fc2.weight"].T + w["fc2.bias"], 0)
    z = (np.concatenate([h2, u], -1) @ w["fc3.weight"].T + w["fc3.bias"])[..., 0]
    return -np.logaddexp(0.0, z)


@pytest.mark.parametrize("init_radius", [1.0, None])
def test_layer_widths_and_concatenations(init_radius):
    mlp = ImplicitShapeMLP(init_radius=init_radius)
    assert (mlp.fc1.in_features, mlp.fc1.out_features) == (3, 8)
    assert (mlp.fc2.in_features, mlp.fc2.out_features) == (8 + 3, 4)
    assert (mlp.fc3.in_features, mlp.fc3.out_features) == (4 + 3, 1)
    assert sum(p.numel() for p in mlp.parameters()) == (3 * 8 + 8) + (11 * 4 + 4) + (7 * 1 + 1)
    seen = {}
    mlp.fc2.register_forward_hook(lambda m, inp, out: seen.__setitem__("fc2", inp[0].detach()))
    mlp.fc3.register_forward_hook(lambda m, inp, out: seen.__setitem__("fc3", inp[0].detach()))
    coords = torch.tensor([[3.0, 4.0], [-0.6, 0.8], [0.0, -2.0]])
    mlp(coords)
    expected_u = np.array([[3.0, 4.0, 5.0], [-0.6, 0.8, 1.0], [0.0, -2.0, 2.0]])
    np.testing.assert_allclose(seen["fc2"][:, 8:].numpy(), expected_u, atol=1e-5)
    np.testing.assert_allclose(seen["fc3"][:, 4:].numpy(), expected_u, atol=1e-5)
    assert (seen["fc2"][:, :8] >= 0).all() and (seen["fc3"][:, :4] >= 0).all()  # ReLU outputs


@pytest.mark.parametrize("seed,init_radius,scale", [(0, 1.0, 1.0), (1, None, 1.0), (2, None, 4.0), (3, 0.3, 2.0)])
def test_matches_numpy_reference_and_range(seed, init_radius, scale):
    torch.manual_seed(seed)
    mlp = ImplicitShapeMLP(init_radius=init_radius).double()
    with torch.no_grad():
        for p in mlp.parameters():
            p.mul_(scale)
    coords = torch.randn(5, 7, 2, dtype=torch.float64) * 3
    log_p = mlp(coords)
    assert log_p.shape == (5, 7)
    # rtol 1e-8: the module's r carries a 1e-12 guard under the square root
    np.testing.assert_allclose(log_p.detach().numpy(), _np_forward(mlp, coords.numpy()), rtol=1e-8, atol=1e-9)
    assert (log_p <= 0).all()
    p = mlp.probability(coords)
    assert ((p > 0) & (p <= 1)).all()
    np.testing.assert_allclose(p.detach().numpy(), np.exp(log_p.detach().numpy()), rtol=1e-8)


@pytest.mark.parametrize("radius", [0.5, 1.0, 2.0])
def test_initial_shape_is_a_disc(radius):
    torch.manual_seed(0)
    mlp = ImplicitShapeMLP(init_radius=radius, init_sharpness=20.0)
    angles = torch.linspace(0, 2 * np.pi, 16)
    ring = torch.stack([torch.cos(angles), torch.sin(angles)], -1)
    assert (mlp.probability(ring * radius * 0.5) > 0.9).all()
    assert (mlp.probability(ring * radius * 1.6) < 0.1).all()


def test_render_and_gradients():
    mlp = ImplicitShapeMLP()
    img = mlp.render(size=32, extent=2.0)
    assert img.shape == (32, 32) and ((img > 0) & (img <= 1)).all()
    assert img[16, 16] > 0.9 and img[0, 0] < 0.1  # centre inside the initial unit disc, corner (r ~ 2.7) outside
    coords = torch.randn(50, 2, requires_grad=True)
    mlp(coords).sum().backward()
    for name, p in mlp.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(coords.grad).all()


def test_finite_gradient_at_origin():
    coords = torch.zeros(1, 2, requires_grad=True)
    ImplicitShapeMLP()(coords).sum().backward()
    assert torch.isfinite(coords.grad).all()


@pytest.mark.parametrize(
    "kwargs,call",
    [({"hidden": (8,)}, None), ({"hidden": (8, 0)}, None), ({"init_radius": -1.0}, None), ({}, torch.zeros(4, 3))],
)
def test_errors(kwargs, call):
    with pytest.raises(ValueError):
        mlp = ImplicitShapeMLP(**kwargs)
        mlp(call)
