"""annotations: weak labels simulated from full instance labels, and readers of user-made ones."""

from __future__ import annotations

from cellseg_monai.annotations.clicked_components import cut_off_points, unclicked_components
from cellseg_monai.annotations.foreground_count import (
    count_instances,
    find_weak_mask,
    read_counts,
    read_foreground_count,
    read_foreground_mask,
    simulate_foreground_count,
)
from cellseg_monai.annotations.partial import keep_fraction, kept_ids
from cellseg_monai.annotations.points import (
    detect_points,
    find_weak_points,
    points_seed,
    read_points_csv,
    read_weak_mask,
    read_weak_points,
    simulate_points,
    threshold_mask,
    write_points_csv,
)
from cellseg_monai.annotations.scribbles import (
    BACKGROUND,
    UNLABELLED,
    budget_count,
    read_scribbles,
    scribble_seed,
    simulate_scribbles,
    validate_scribbles,
)
from cellseg_monai.annotations.simulate import SIMULATED_KINDS, simulate_dataset
from cellseg_monai.annotations.viewer import VIEWER_KINDS, viewer_labels, write_training_dataset

__all__ = [
    "cut_off_points",
    "unclicked_components",
    "VIEWER_KINDS",
    "viewer_labels",
    "write_training_dataset",
    "detect_points",
    "find_weak_points",
    "points_seed",
    "read_points_csv",
    "read_weak_mask",
    "read_weak_points",
    "simulate_points",
    "threshold_mask",
    "write_points_csv",
    "keep_fraction",
    "kept_ids",
    "simulate_foreground_count",
    "read_foreground_mask",
    "read_foreground_count",
    "read_counts",
    "find_weak_mask",
    "count_instances",
    "BACKGROUND",
    "SIMULATED_KINDS",
    "UNLABELLED",
    "budget_count",
    "read_scribbles",
    "scribble_seed",
    "simulate_dataset",
    "simulate_scribbles",
    "validate_scribbles",
]
