"""Clip the gradient norm between the backward pass and the optimiser step of a MONAI trainer."""

from __future__ import annotations

import math

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["GradientClipping"]


class GradientClipping:
    """Rescale the network's gradients so that their total norm is at most ``max_norm`` before every optimiser step.

    MONAI's ``SupervisedTrainer`` fires ``IterationEvents.BACKWARD_COMPLETED`` after ``loss.backward()`` and before
    ``optimizer.step()``; this handler runs there (``torch.nn.utils.clip_grad_norm_``). With a CUDA AMP grad scaler
    the gradients are unscaled first (``scaler.unscale_``, the pattern PyTorch documents), so ``max_norm`` is in the
    loss's own units. With gradient accumulation each backward pass clips the gradients summed so far (not with AMP:
    refused).

    The norm before clipping is written to ``engine.state.output["grad_norm"]`` (a float), so a ``StatsHandler`` or
    ``TensorBoardStatsHandler`` can log it: a training whose scores collapse now and then shows whether its gradient
    spikes there.

    Args:
        max_norm: the largest total norm kept; ``None`` or ``0`` disables clipping (the norm is still not computed).
        network: the module whose parameters are clipped; default the trainer's ``network``.
        norm_type: the p of the p-norm (``2.0``; ``inf`` for the largest absolute value).
    """

    def __init__(
        self, max_norm: float | None = None, network: torch.nn.Module | None = None, norm_type: float = 2.0
    ) -> None:
        if max_norm is not None and (not math.isfinite(max_norm) or max_norm < 0):
            raise ValueError(f"max_norm must be a finite number >= 0 or None, got {max_norm}")
        if not (norm_type > 0):
            raise ValueError(f"norm_type must be > 0, got {norm_type}")
        self.max_norm = max_norm
        self.network = network
        self.norm_type = float(norm_type)

    def attach(self, engine: Engine) -> None:
        if not self.max_norm:
            return
        if getattr(engine, "amp", False) and getattr(engine, "accumulation_steps", 1) > 1:
            raise ValueError(
                "GradientClipping does not support AMP with gradient accumulation (accumulation_steps > 1)"
            )
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        network = self.network if self.network is not None else engine.network
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None and scaler.is_enabled():
            scaler.unscale_(engine.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(network.parameters(), float(self.max_norm), norm_type=self.norm_type)
        if isinstance(engine.state.output, dict):
            engine.state.output["grad_norm"] = float(norm)
