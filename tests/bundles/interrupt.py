"""A handler for the interruption tests: pause a training once, mid-epoch, so that a test can kill it there."""

from __future__ import annotations

import time
from pathlib import Path

from ignite.engine import Engine, Events


class PauseOnce:
    """After the first iteration of epoch ``epoch``, write ``marker`` and sleep (until killed) — unless ``marker``
    already exists, so the resumed run, built from the same config, goes on without pausing.

    Args:
        marker: file written when pausing: ``"<epoch> <iteration>"``.
        epoch: the epoch (1-based) in which to pause.
        seconds: how long to sleep.
    """

    def __init__(self, marker: str, epoch: int = 2, seconds: float = 600.0) -> None:
        self.marker = Path(marker)
        self.epoch = epoch
        self.seconds = seconds

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch == self.epoch and not self.marker.exists():
            self.marker.write_text(f"{engine.state.epoch} {engine.state.iteration}")
            time.sleep(self.seconds)


class StopOnce:
    """At the end of epoch ``epoch`` — after the epoch's checkpoint, being attached after the checkpoint handler —
    write ``marker`` and stop the training cleanly (``engine.terminate()``), unless ``marker`` already exists, so the
    resumed run, built from the same config, goes on to ``max_epochs``.

    Args:
        marker: file written when stopping: ``"<epoch> <iteration>"``.
        epoch: the epoch (1-based) after which to stop.
    """

    def __init__(self, marker: str, epoch: int = 1) -> None:
        self.marker = Path(marker)
        self.epoch = epoch

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch == self.epoch and not self.marker.exists():
            self.marker.write_text(f"{engine.state.epoch} {engine.state.iteration}")
            engine.terminate()
