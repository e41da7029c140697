"""Stop training after a wall-clock budget, at an epoch boundary."""

from __future__ import annotations

import logging
import time

import ignite.distributed as idist
from ignite.engine import Engine, Events

__all__ = ["TrainingTimeLimit"]

logger = logging.getLogger(__name__)


class TrainingTimeLimit:
    """Terminate the trainer at the first epoch end after ``minutes`` of training.

    Unlike ``ignite.handlers.TimeLimit`` (timed from construction, checked every iteration) the clock starts when
    training starts (dataset caching is not counted) and the check runs at ``EPOCH_COMPLETED`` after the handlers
    attached before it, so the last epoch is validated and checkpointed as usual. Use ``epoch_length`` on the
    trainer to make epochs short enough for the budget's granularity.

    Args:
        minutes: the budget; ``None`` or ``0`` disables the limit.
    """

    def __init__(self, minutes: float | None = None) -> None:
        if minutes is not None and minutes < 0:
            raise ValueError(f"minutes must be >= 0, got {minutes}")
        self.minutes = minutes
        self._start = 0.0

    def attach(self, engine: Engine) -> None:
        if not self.minutes:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        self._start = time.monotonic()

    def __call__(self, engine: Engine) -> None:
        elapsed = time.monotonic() - self._start
        # in a distributed run rank 0 decides for all ranks, so no rank stops while another waits in a collective
        if idist.get_world_size() > 1:
            elapsed = float(idist.broadcast(elapsed, src=0))
        if elapsed >= 60.0 * float(self.minutes or 0):
            logger.warning(
                "training time budget of %.1f min reached after epoch %d: stopping", self.minutes, engine.state.epoch
            )
            engine.terminate()
