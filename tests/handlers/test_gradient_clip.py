from __future__ import annotations

import math

import pytest
import torch
from monai.engines import SupervisedTrainer

from cellseg_monai.handlers import GradientClipping

# one sample, a linear network without bias, loss = 0.5 * ||w x - y||^2: the gradient is (w x - y) x^T, known by hand
X = torch.tensor([[3.0, 4.0]])
Y = torch.tensor([[0.0]])
W0 = torch.tensor([[10.0, -2.0]])


def _train_one_step(max_norm, lr=1.0):
    network = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        network.weight.copy_(W0)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[{"image": X, "label": Y}],
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=lr),
        loss_function=lambda pred, target: 0.5 * ((pred - target) ** 2).sum(),
        train_handlers=[GradientClipping(max_norm)],
        decollate=False,
    )
    trainer.run()
    return network.weight.detach().clone(), trainer.state.output


def _hand_gradient():
    residual = float(W0 @ X.T - Y)  # 10*3 - 2*4 = 22
    return residual * X  # [[66, 88]], norm 110


def test_step_uses_the_clipped_gradient_and_records_the_norm():
    grad = _hand_gradient()
    weight, output = _train_one_step(max_norm=5.5)
    # SGD with lr 1: w1 = w0 - g * (5.5 / 110)
    assert torch.allclose(weight, W0 - grad * (5.5 / 110.0), atol=1e-5)
    assert output["grad_norm"] == pytest.approx(110.0, rel=1e-6)


def test_a_norm_under_the_limit_is_left_alone():
    weight, output = _train_one_step(max_norm=1000.0, lr=0.01)
    assert torch.allclose(weight, W0 - 0.01 * _hand_gradient(), atol=1e-5)
    assert output["grad_norm"] == pytest.approx(110.0, rel=1e-6)


@pytest.mark.parametrize("max_norm", [None, 0])
def test_disabled(max_norm):
    weight, output = _train_one_step(max_norm=max_norm, lr=0.01)
    assert torch.allclose(weight, W0 - 0.01 * _hand_gradient(), atol=1e-5)
    assert "grad_norm" not in output


def test_infinity_norm():
    network = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        network.weight.copy_(W0)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[{"image": X, "label": Y}],
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=1.0),
        loss_function=lambda pred, target: 0.5 * ((pred - target) ** 2).sum(),
        train_handlers=[GradientClipping(8.8, norm_type=math.inf)],
    )
    trainer.run()
    # largest |g| is 88: scaled by 8.8 / 88 = 0.1
    assert torch.allclose(network.weight.detach(), W0 - 0.1 * _hand_gradient(), atol=1e-4)


@pytest.mark.parametrize("kwargs", [{"max_norm": -1.0}, {"max_norm": math.nan}, {"max_norm": 1.0, "norm_type": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        GradientClipping(**kwargs)
