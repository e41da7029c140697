"""Learning-rate schedules that follow a wall-clock training budget as well as a step count.

A bundle trained for ``max_train_minutes`` (``TrainingTimeLimit``) cannot know how many iterations it will run, so
a schedule laid over ``max_epochs`` × iterations per epoch is wrong under a time budget: with ``max_epochs`` set
high to let the clock decide (``benchmarks/run.py`` sets 100000), PyTorch's ``OneCycleLR`` never leaves the first
percent of its warm-up and the whole training runs at ``max_lr / div_factor``. :class:`BudgetOneCycleLR` is
``OneCycleLR`` on a progress ``p`` in [0, 1] that is the larger of the step fraction and the elapsed fraction of
the time budget, so the cycle fits whichever budget ends first.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

import ignite.distributed as idist
from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR

__all__ = ["BudgetOneCycleLR"]


class BudgetOneCycleLR(OneCycleLR):
    """PyTorch's ``OneCycleLR`` over the step count **or** a wall-clock budget, whichever ends first.

    With ``minutes`` 0 (or None) it is ``OneCycleLR`` step for step up to ``total_steps - 1`` and stays at the
    cycle's end after it (``OneCycleLR`` would extrapolate the cosine upwards at step ``total_steps``, the step a
    trainer takes after its last iteration, and raise after it). With ``minutes`` > 0, step ``t`` uses the
    schedule at step ``min(total_steps - 1, max(t, ⌊total_steps · elapsed / (60 · minutes)⌋))``: the warm-up takes
    ``pct_start`` of the budget and the annealing the rest, ending at ``max_lr / (div_factor · final_div_factor)``
    when the budget is spent (steps past it stay there). The clock starts at the first ``step()`` after
    construction (the training's first iteration, so dataset caching is not counted); the elapsed time is part of
    ``state_dict()``, so a resumed run continues the schedule where it stopped. In a distributed run rank 0's clock
    is broadcast, so every rank uses the same learning rate.

    Args:
        optimizer, max_lr, total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy, cycle_momentum,
            base_momentum, max_momentum, div_factor, final_div_factor, three_phase: as ``OneCycleLR``.
        minutes: the wall-clock budget the schedule spans (the trainer's ``max_train_minutes``); 0 or None: steps
            only.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        minutes: float | None = None,
    ) -> None:
        if minutes is not None and (isinstance(minutes, bool) or minutes < 0):
            raise ValueError(f"minutes must be >= 0 (0 or None: no time budget), got {minutes!r}")
        self.minutes = float(minutes or 0.0)
        self._elapsed_before = 0.0  # seconds of earlier runs of a resumed training
        self._clock_start: float | None = None
        super().__init__(
            optimizer,
            max_lr,
            total_steps=total_steps,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            cycle_momentum=cycle_momentum,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            three_phase=three_phase,
        )

    def elapsed_seconds(self) -> float:
        """Seconds of training so far on this process's clock (0 before the first ``step()``)."""
        running = 0.0 if self._clock_start is None else monotonic() - self._clock_start
        return self._elapsed_before + running

    def progress_step(self) -> int:
        """The step of the One-Cycle schedule that this step uses (see the class docstring)."""
        last = int(self.total_steps) - 1  # the cycle's last step: OneCycleLR itself extrapolates past it
        step = int(self.last_epoch)
        if self.minutes <= 0:
            return min(last, step)
        elapsed = self.elapsed_seconds()
        if idist.get_world_size() > 1:  # every rank steps together: rank 0's clock decides for all
            elapsed = float(idist.broadcast(elapsed, src=0))
        by_time = int(self.total_steps * elapsed / (60.0 * self.minutes))
        return min(last, max(step, by_time))

    def step(self, epoch: int | None = None) -> None:
        if self._clock_start is None and self.last_epoch >= 0:  # not the constructor's own first step
            self._clock_start = monotonic()
        super().step(epoch)

    def _widen_empty_phases(self) -> None:
        """Give a phase that ends where it starts a tiny length: ``OneCycleLR`` divides by ``end - start`` and
        raises ``ZeroDivisionError`` at step 0 when ``pct_start · total_steps`` is exactly 1 (e.g. 10 steps at
        ``pct_start`` 0.1); with the tiny length the step is the phase's start, as the formula's limit."""
        start = 0.0
        for phase in self._schedule_phases:
            if phase["end_step"] == start:
                phase["end_step"] = start + 1e-6
            start = phase["end_step"]

    def get_lr(self) -> list[float]:
        self._widen_empty_phases()  # here, not in __init__: a resumed run's TrainingCheckpoint resets the phases
        actual = self.last_epoch
        self.last_epoch = self.progress_step()
        try:
            return super().get_lr()
        finally:
            self.last_epoch = actual

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("_clock_start", None)  # a monotonic clock reading means nothing in another process
        state["_elapsed_before"] = self.elapsed_seconds()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._clock_start = None
