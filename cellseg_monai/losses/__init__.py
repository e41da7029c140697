"""losses: one loss family per file."""

from __future__ import annotations

from .canonical_shape import CanonicalShapeLoss, count_loss, soft_dice_loss
from .impartial import (
    DEFAULT_WEIGHTS,
    ImPartialLoss,
    MixtureReconstructionLoss,
    ScribbleLoss,
    mixture_nll,
    scribble_class_losses,
)

__all__ = [
    "soft_dice_loss",
    "count_loss",
    "CanonicalShapeLoss",
    "DEFAULT_WEIGHTS",
    "ImPartialLoss",
    "MixtureReconstructionLoss",
    "ScribbleLoss",
    "mixture_nll",
    "scribble_class_losses",
]
