"""networks: one network per module; a network with parts of its own is a subpackage holding them
(``mask_rcnn/``, ``lacss/``, ``canonical_shape/``)."""

from __future__ import annotations

from .canonical_shape import BACKBONES, CanonicalShapeNet, DilatedResNet, render_instances
from .ensemble import AverageEnsemble, MixtureAverageEnsemble, ensemble_state_dict
from .impartial_unet import (
    ImPartialUNet,
    check_classes,
    class_log_probabilities,
    class_probabilities,
    num_raw_channels,
    split_output,
)
from .lacss import (
    Lacss,
    LacssAuxNet,
    LacssBackbone,
    match_locations,
)
from .mask_rcnn import (
    CenternessModule,
    IoUMatcher,
    MaskRCNN,
    SmallBackbone,
    build_mask_rcnn,
    ignore_matched_negatives,
    instance_boxes,
    nms,
    pixel_anchors,
)
from .seunet import SEConvBlock, SEUNet, pad_to_multiple
from .sparse_seunet import InstanceActivationBranch, SparseSEUNet, aggregate_instance_features, coordinate_channels

__all__ = [
    "AverageEnsemble",
    "MixtureAverageEnsemble",
    "ensemble_state_dict",
    "Lacss",
    "LacssAuxNet",
    "LacssBackbone",
    "match_locations",
    "CenternessModule",
    "ignore_matched_negatives",
    "instance_boxes",
    "pixel_anchors",
    "IoUMatcher",
    "MaskRCNN",
    "build_mask_rcnn",
    "SmallBackbone",
    "nms",
    "InstanceActivationBranch",
    "SparseSEUNet",
    "aggregate_instance_features",
    "coordinate_channels",
    "SEConvBlock",
    "SEUNet",
    "pad_to_multiple",
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
