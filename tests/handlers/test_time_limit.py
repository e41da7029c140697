from __future__ import annotations

import pytest
from ignite.engine import Engine

from cellseg_monai.handlers import TrainingTimeLimit, time_limit


def _run(minutes, epochs=50, monkeypatch=None, seconds_per_epoch=0.0):
    clock = [0.0]
    if monkeypatch is not None:  # a fake clock: each iteration (one per epoch) advances it by seconds_per_epoch
        monkeypatch.setattr(time_limit.time, "monotonic", lambda: clock[0])

    def step(engine, batch):
        clock[0] += seconds_per_epoch

    engine = Engine(step)
    TrainingTimeLimit(minutes).attach(engine)
    engine.run([0], max_epochs=epochs)
    return engine.state.epoch


def test_stops_at_the_first_epoch_end_past_the_budget(monkeypatch):
    # budget 60 s, each epoch takes 25 s of the fake clock: 50 s < 60 s after epoch 2, 75 s >= 60 s after epoch 3
    assert _run(1.0, monkeypatch=monkeypatch, seconds_per_epoch=25.0) == 3


def test_disabled_without_budget():
    assert _run(0, epochs=7) == 7
    assert _run(None, epochs=7) == 7


def test_negative_budget_rejected():
    with pytest.raises(ValueError, match="minutes"):
        TrainingTimeLimit(-1)
