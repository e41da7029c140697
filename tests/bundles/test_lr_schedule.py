"""Every bundle with an ``lr_scheduler`` block (the One-Cycle schedule over the training budget): its learning
rate, step for step, is PyTorch's own ``OneCycleLR`` with the config's settings, and it is part of each training
checkpoint (so ``--resume`` continues the schedule). The runs are the shared ones of test_bundles.py."""

from __future__ import annotations

import inspect

import pytest
import torch
from monai.bundle import ConfigParser

from cellseg_monai.optimizers import BudgetOneCycleLR
from tests.bundles.conftest import BUNDLE_NAMES, REPO

_SETTINGS = ("pct_start", "div_factor", "final_div_factor", "anneal_strategy", "three_phase")


def _config(name: str) -> ConfigParser:
    config = ConfigParser()
    config.read_config(str(REPO / "bundles" / name / "configs" / "train.json"))
    return config


SCHEDULED = [name for name in BUNDLE_NAMES if "lr_scheduler" in _config(name)]


def _settings(config: ConfigParser) -> dict:
    """The schedule's settings: the config's, else ``BudgetOneCycleLR``'s defaults."""
    defaults = inspect.signature(BudgetOneCycleLR).parameters
    return {k: config[f"lr_scheduler#{k}"] if f"lr_scheduler#{k}" in config else defaults[k].default for k in _SETTINGS}


def _one_cycle_lrs(max_lr: float, total_steps: int, settings: dict) -> list[float]:
    """PyTorch's ``OneCycleLR`` learning rates after 0, 1, …, total_steps - 1 steps."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps, cycle_momentum=False, **settings
    )
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(total_steps - 1):
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_the_bundles_that_train_to_a_budget_schedule_their_learning_rate():
    assert {"impartial", "sparse_seunet", "supervised_unet", "canonical_shape"} <= set(SCHEDULED)


@pytest.mark.slow
@pytest.mark.parametrize("name", SCHEDULED)
def test_the_learning_rate_follows_one_cycle_and_is_part_of_the_checkpoint(flows, name):
    """Each checkpoint's lr is ``OneCycleLR``'s at the same step; the last one is the schedule's end."""
    flow = flows[name].trained()
    config = _config(name)
    settings = _settings(config)
    checkpoints = sorted((flow.root / "train").glob("checkpoint_epoch=*.pt"))
    assert checkpoints, flow.log[-2000:]
    for path in checkpoints:
        ckpt = torch.load(path, weights_only=True)
        total = ckpt["lr_scheduler"]["total_steps"]  # max_epochs 2 × iterations per epoch
        max_lr = ckpt["lr_scheduler"]["base_lrs"][0] * settings["div_factor"]  # the run's learning_rate
        lrs = _one_cycle_lrs(max_lr, total, settings)
        steps = ckpt["lr_scheduler"]["_step_count"] - 1  # the constructor's own step is counted
        assert steps >= 1
        expected = lrs[min(steps, total - 1)]  # past the last step the schedule stays at its end
        assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected, rel=1e-6)
    assert steps == total  # the last checkpoint is the end of the training: the lr has decayed to its floor
    floor = max_lr / (settings["div_factor"] * settings["final_div_factor"])
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(floor, rel=1e-6)
    if "learning_rate" in config and not any(a == "--learning_rate" for a in flow.spec.train + flow.spec.small):
        assert max_lr == pytest.approx(config["learning_rate"], rel=1e-6)
