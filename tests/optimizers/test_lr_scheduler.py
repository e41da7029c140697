"""BudgetOneCycleLR against PyTorch's OneCycleLR (the reference), with a hand-driven clock for the time budget."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR

from cellseg_monai.optimizers import BudgetOneCycleLR
from cellseg_monai.optimizers import lr_scheduler as module

MAX_LR, TOTAL = 0.01, 1000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(module, "monotonic", fake)
    return fake


def _sgd() -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=MAX_LR, momentum=0.9, nesterov=True)


def _step(scheduler) -> None:
    scheduler.optimizer.step()
    scheduler.step()


def _reference_lrs(total: int = TOTAL, **kwargs) -> list[float]:
    """The learning rate of each step 0..total of torch's OneCycleLR."""
    ref = OneCycleLR(_sgd(), MAX_LR, total_steps=total, **kwargs)
    lrs = [ref.optimizer.param_groups[0]["lr"]]
    for _ in range(total - 1):
        _step(ref)
        lrs.append(ref.optimizer.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("minutes", [0, None])
def test_without_a_time_budget_it_is_one_cycle_step_for_step(minutes, clock):
    reference = _reference_lrs(three_phase=True)
    sched = BudgetOneCycleLR(_sgd(), MAX_LR, total_steps=TOTAL, three_phase=True, minutes=minutes)
    got = [sched.optimizer.param_groups[0]["lr"]]
    for _ in range(TOTAL - 1):
        clock.now += 3600.0  # time plays no part
        _step(sched)
        got.append(sched.optimizer.param_groups[0]["lr"])
    assert got == pytest.approx(reference, rel=1e-12)
    for _ in range(3):  # a trainer steps after its last iteration too: the schedule stays at its end, where
        _step(sched)  # OneCycleLR would extrapolate the cosine back up and then raise
        assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(reference[-1], rel=1e-12)


def test_a_time_budget_lays_the_cycle_over_the_minutes(clock):
    reference = _reference_lrs()
    sched = BudgetOneCycleLR(_sgd(), MAX_LR, total_steps=TOTAL, minutes=2.0)  # 120 s
    clock.now += 50.0  # caching the dataset before the first iteration: not counted
    _step(sched)  # first iteration: the clock starts
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(reference[1])
    for seconds, step in [(36.0, 300), (60.0, 500), (90.0, 750), (119.9, 999)]:
        clock.now += seconds - sched.elapsed_seconds()
        _step(sched)  # a few steps only: the time fraction leads
        assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(reference[step], rel=1e-9), seconds
    assert sched.optimizer.param_groups[0]["lr"] < MAX_LR / 25
    clock.now += 600.0  # past the budget (the trainer stops at the epoch end): the final learning rate
    _step(sched)
    final = MAX_LR / 25 / 1e4
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(final, rel=1e-6)


def test_the_step_count_leads_when_it_is_further(clock):
    reference = _reference_lrs()
    sched = BudgetOneCycleLR(_sgd(), MAX_LR, total_steps=TOTAL, minutes=60.0)
    for _ in range(400):
        clock.now += 0.01  # 4 s of an hour: the step fraction (0.4) is further than the time fraction
        _step(sched)
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(reference[400], rel=1e-9)


def test_state_dict_carries_the_elapsed_time_to_a_resumed_run(clock):
    reference = _reference_lrs()
    sched = BudgetOneCycleLR(_sgd(), MAX_LR, total_steps=TOTAL, minutes=1.0)
    _step(sched)
    clock.now += 30.0
    _step(sched)
    state = sched.state_dict()
    assert state["_elapsed_before"] == pytest.approx(30.0) and "_clock_start" not in state
    resumed = BudgetOneCycleLR(_sgd(), MAX_LR, total_steps=TOTAL, minutes=1.0)
    resumed.load_state_dict(state)
    clock.now += 999.0  # the time between the two processes is not training
    _step(resumed)  # clock restarts here
    clock.now += 15.0
    _step(resumed)  # 30 + 15 s of 60: three quarters of the cycle
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(reference[750], rel=1e-9)


@pytest.mark.parametrize("minutes", [-1.0, True])
def test_rejects_a_negative_budget(minutes):
    with pytest.raises(ValueError, match="minutes"):
        BudgetOneCycleLR(_sgd(), MAX_LR, total_steps=TOTAL, minutes=minutes)


def test_a_warm_up_of_exactly_one_step_does_not_divide_by_zero():
    """10 steps at pct_start 0.1: OneCycleLR's warm-up ends where it starts (step 0) and it raises
    ZeroDivisionError; here step 0 is the warm-up's start and the rest the cosine from max_lr to the floor."""
    with pytest.raises(ZeroDivisionError):
        OneCycleLR(_sgd(), MAX_LR, total_steps=10, pct_start=0.1, cycle_momentum=False)
    sched = BudgetOneCycleLR(_sgd(), MAX_LR, total_steps=10, pct_start=0.1, cycle_momentum=False)
    floor = MAX_LR / 25 / 1e4
    got = [sched.optimizer.param_groups[0]["lr"]]
    for _ in range(9):
        _step(sched)
        got.append(sched.optimizer.param_groups[0]["lr"])
    cosine = [floor + (MAX_LR - floor) * (1 + math.cos(math.pi * t / 9)) / 2 for t in range(1, 10)]
    assert got == pytest.approx([MAX_LR / 25, *cosine], rel=1e-5)
