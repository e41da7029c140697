"""annotations: weak labels simulated from full instance labels, and readers of user-made ones."""

from __future__ import annotations

from cellseg_monai.annotations.scribbles import (
    BACKGROUND,
    UNLABELLED,
    budget_count,
    read_scribbles,
    scribble_seed,
    simulate_scribbles,
    validate_scribbles,
)
from cellseg_monai.annotations.simulate import PLANNED_KINDS, SIMULATED_KINDS, simulate_dataset

__all__ = [
    "BACKGROUND",
    "PLANNED_KINDS",
    "SIMULATED_KINDS",
    "UNLABELLED",
    "budget_count",
    "read_scribbles",
    "scribble_seed",
    "simulate_dataset",
    "simulate_scribbles",
    "validate_scribbles",
]
