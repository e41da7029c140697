"""The fully supervised U-Net bundle: what only it does (the shared train → evaluate → infer flow is in
test_bundles.py; these tests read the same runs)."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundles.conftest import REPO

BUNDLE = REPO / "bundles" / "supervised_unet"


@pytest.mark.slow
def test_network_predicts_background_interior_boundary(flows):
    state = torch.load(flows["supervised_unet"].trained().model, weights_only=True)
    assert state["final_conv.weight"].shape[0] == 3  # background / interior / boundary


def test_training_uses_full_labels_not_a_budget():
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    assert "annotation_budget" not in parser  # the benchmark tells weak bundles by this id


def _one_cycle_lrs(config: ConfigParser, total_steps: int) -> list[float]:
    """PyTorch's ``OneCycleLR`` learning rates after 0, 1, …, total_steps - 1 steps, with the config's settings."""
    settings = {k: config[f"lr_scheduler#{k}"] for k in ("pct_start", "div_factor", "final_div_factor")}
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=config["learning_rate"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config["learning_rate"], total_steps=total_steps, cycle_momentum=False, **settings
    )
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(total_steps - 1):
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


@pytest.mark.slow
def test_the_learning_rate_follows_one_cycle_and_is_part_of_the_checkpoint(flows):
    """Each checkpoint's lr is PyTorch's ``OneCycleLR`` at the same step; the last one is the schedule's end."""
    flow = flows["supervised_unet"].trained()
    config = ConfigParser()
    config.read_config(str(BUNDLE / "configs" / "train.json"))
    checkpoints = sorted((flow.root / "train").glob("checkpoint_epoch=*.pt"))
    assert checkpoints
    for path in checkpoints:
        ckpt = torch.load(path, weights_only=True)
        total = ckpt["lr_scheduler"]["total_steps"]  # max_epochs 2 × iterations per epoch
        lrs = _one_cycle_lrs(config, total)
        steps = ckpt["lr_scheduler"]["_step_count"] - 1  # the constructor's own step is counted
        assert steps >= 1
        expected = lrs[min(steps, total - 1)]  # past the last step the schedule stays at its end
        assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected, rel=1e-6)
    assert steps == total  # the last checkpoint is the end of the training: the lr has decayed to its floor
    floor = config["learning_rate"] / (config["lr_scheduler#div_factor"] * config["lr_scheduler#final_div_factor"])
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(floor, rel=1e-6)
