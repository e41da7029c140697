"""Handlers for the interruption tests: act once in a given epoch — pause a training (so that a test can kill it
there) or stop it cleanly — unless a marker file says it already happened, so the resumed run, built from the same
config, goes on."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path

from ignite.engine import Engine, Events


class _OnceInEpoch(ABC):
    """On ``event`` in epoch ``epoch`` (1-based), write ``marker`` (``"<epoch> <iteration>"``) and :meth:`act`,
    unless ``marker`` already exists."""

    event = Events.ITERATION_COMPLETED

    def __init__(self, marker: str, epoch: int) -> None:
        self.marker = Path(marker)
        self.epoch = epoch

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(self.event, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch == self.epoch and not self.marker.exists():
            self.marker.write_text(f"{engine.state.epoch} {engine.state.iteration}")
            self.act(engine)

    @abstractmethod
    def act(self, engine: Engine) -> None:
        """What the handler does once (pause, stop)."""


class PauseOnce(_OnceInEpoch):
    """After the first iteration of epoch ``epoch``, write ``marker`` and sleep ``seconds`` (until killed)."""

    def __init__(self, marker: str, epoch: int = 2, seconds: float = 600.0) -> None:
        super().__init__(marker, epoch)
        self.seconds = seconds

    def act(self, engine: Engine) -> None:
        time.sleep(self.seconds)


class StopOnce(_OnceInEpoch):
    """At the end of epoch ``epoch`` — after the epoch's checkpoint, being attached after the checkpoint handler —
    write ``marker`` and stop the training cleanly (``engine.terminate()``)."""

    event = Events.EPOCH_COMPLETED

    def __init__(self, marker: str, epoch: int = 1) -> None:
        super().__init__(marker, epoch)

    def act(self, engine: Engine) -> None:
        engine.terminate()
