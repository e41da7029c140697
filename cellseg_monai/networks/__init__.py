"""networks: one network per file; shared blocks in networks/blocks/."""

from __future__ import annotations

from .canonical_shape import BACKBONES, CanonicalShapeNet, DilatedResNet, render_instances
from .impartial_unet import (
    ImPartialUNet,
    check_classes,
    class_log_probabilities,
    class_probabilities,
    num_raw_channels,
    split_output,
)

__all__ = [
    "render_instances",
    "DilatedResNet",
    "CanonicalShapeNet",
    "BACKBONES",
    "ImPartialUNet",
    "check_classes",
    "class_log_probabilities",
    "class_probabilities",
    "num_raw_channels",
    "split_output",
]
