"""losses: one loss family per file."""

from __future__ import annotations

from .canonical_shape import CanonicalShapeLoss, count_loss, soft_dice_loss
from .focal import sigmoid_focal_loss
from .impartial import (
    DEFAULT_WEIGHTS,
    ImPartialLoss,
    MixtureReconstructionLoss,
    ScribbleLoss,
    mixture_nll,
    scribble_class_losses,
)
from .lacss import (
    LacssLoss,
    aux_boundary_loss,
    instance_edges,
    lpn_loss,
    supervised_segmentation_loss,
    unclicked_foreground,
    weak_segmentation_loss,
)
from .mask_rcnn import MaskRCNNLoss, box_head_loss, centerness_loss, centerness_targets, mask_loss, rpn_loss
from .seunet import FocalOverlapLoss, MultiHeadBCELoss, SEUNetLoss
from .sparse_instance import (
    SparseInstanceLoss,
    SparseSEUNetLoss,
    dice_coefficient_matrix,
    hungarian_match,
    label_masks,
    matching_score,
)

__all__ = [
    "LacssLoss",
    "aux_boundary_loss",
    "instance_edges",
    "lpn_loss",
    "supervised_segmentation_loss",
    "unclicked_foreground",
    "weak_segmentation_loss",
    "MaskRCNNLoss",
    "box_head_loss",
    "centerness_loss",
    "centerness_targets",
    "mask_loss",
    "rpn_loss",
    "SparseInstanceLoss",
    "SparseSEUNetLoss",
    "dice_coefficient_matrix",
    "hungarian_match",
    "label_masks",
    "matching_score",
    "sigmoid_focal_loss",
    "FocalOverlapLoss",
    "MultiHeadBCELoss",
    "SEUNetLoss",
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
