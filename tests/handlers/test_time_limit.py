from __future__ import annotations

import time

import pytest
from ignite.engine import Engine

from cellseg_monai.handlers import TrainingTimeLimit


def _run(minutes, sleep_s=0.02, epochs=50):
    engine = Engine(lambda e, b: time.sleep(sleep_s))
    TrainingTimeLimit(minutes).attach(engine)
    engine.run([0], max_epochs=epochs)
    return engine.state.epoch


def test_stops_at_the_first_epoch_end_past_the_budget():
    # budget 0.1 s, each epoch takes 0.02 s: stops after the 5th or 6th epoch, never mid-epoch
    stopped = _run(0.1 / 60)
    assert 5 <= stopped <= 8


def test_disabled_without_budget():
    assert _run(0, sleep_s=0.0, epochs=7) == 7
    assert _run(None, sleep_s=0.0, epochs=7) == 7


def test_negative_budget_rejected():
    with pytest.raises(ValueError, match="minutes"):
        TrainingTimeLimit(-1)
