"""networks: one network per file; shared blocks in networks/blocks/."""

from __future__ import annotations

from .impartial_unet import (
    ImPartialUNet,
    check_classes,
    class_log_probabilities,
    class_probabilities,
    num_raw_channels,
    split_output,
)

__all__ = [
    "ImPartialUNet",
    "check_classes",
    "class_log_probabilities",
    "class_probabilities",
    "num_raw_channels",
    "split_output",
]
