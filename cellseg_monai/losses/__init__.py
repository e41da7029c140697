"""losses: one loss family per file."""

from __future__ import annotations

from .impartial import (
    DEFAULT_WEIGHTS,
    ImPartialLoss,
    MixtureReconstructionLoss,
    ScribbleLoss,
    mixture_nll,
    scribble_class_losses,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "ImPartialLoss",
    "MixtureReconstructionLoss",
    "ScribbleLoss",
    "mixture_nll",
    "scribble_class_losses",
]
