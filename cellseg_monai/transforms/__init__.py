"""MONAI-style transforms: each an array class doing the work and a dictionary (``...d``) wrapper."""

from __future__ import annotations

from .blind_spot import BlindSpot, BlindSpotd, sample_blind_spots
from .checks import RequireFinite, RequireFinited
from .copy_paste import CopyPaste, CopyPasted, paste_object
from .foreground_count import ForegroundCount, ForegroundCountd, SplitInstanceOutputd
from .instance_outputs import InstanceOutputsd, ProbabilityToInstances, ProbabilityToInstancesd, labels_like
from .intensity import NormalizePolarity, NormalizePolarityd
from .interior_boundary import (
    InstancesToInteriorBoundary,
    InstancesToInteriorBoundaryd,
    InteriorBoundaryToInstances,
    InteriorBoundaryToInstancesd,
    instances_to_interior_boundary,
)
from .io import LoadMicroscopy, LoadMicroscopyd, match_channels
from .mixture import MixtureToProbabilities, MixtureToProbabilitiesd
from .partial import KeepFraction, KeepFractiond
from .points import (
    MASK_SOURCES,
    POINT_SOURCES,
    CutOffPointsd,
    DetectPoints,
    DetectPointsd,
    ForegroundMaskd,
    LoadPointsd,
    MakePointsd,
    SimulatePoints,
    SimulatePointsd,
    ThresholdMask,
    map_to_points,
    points_to_map,
)
from .save_instances import SaveInstancesd, instance_overlay
from .scribbles import SimulateScribbles, SimulateScribblesd
from .semantic_targets import (
    DECODERS,
    HEADS,
    SemanticTargets,
    SemanticTargetsd,
    SEUNetOutputsToInstances,
    SEUNetOutputsToInstancesd,
    instance_stack,
    overlap_probability_map,
)

__all__ = [
    "CutOffPointsd",
    "RequireFinite",
    "RequireFinited",
    "POINT_SOURCES",
    "MASK_SOURCES",
    "DetectPoints",
    "DetectPointsd",
    "ForegroundMaskd",
    "LoadPointsd",
    "MakePointsd",
    "SimulatePoints",
    "SimulatePointsd",
    "ThresholdMask",
    "map_to_points",
    "points_to_map",
    "KeepFraction",
    "KeepFractiond",
    "CopyPaste",
    "CopyPasted",
    "paste_object",
    "DECODERS",
    "HEADS",
    "SEUNetOutputsToInstances",
    "SEUNetOutputsToInstancesd",
    "SemanticTargets",
    "SemanticTargetsd",
    "instance_stack",
    "overlap_probability_map",
    "BlindSpot",
    "BlindSpotd",
    "ForegroundCount",
    "ForegroundCountd",
    "SplitInstanceOutputd",
    "LoadMicroscopy",
    "LoadMicroscopyd",
    "MixtureToProbabilities",
    "NormalizePolarity",
    "NormalizePolarityd",
    "MixtureToProbabilitiesd",
    "ProbabilityToInstances",
    "ProbabilityToInstancesd",
    "InstanceOutputsd",
    "SaveInstancesd",
    "SimulateScribbles",
    "SimulateScribblesd",
    "instance_overlay",
    "labels_like",
    "match_channels",
    "sample_blind_spots",
    "InstancesToInteriorBoundary",
    "InstancesToInteriorBoundaryd",
    "InteriorBoundaryToInstances",
    "InteriorBoundaryToInstancesd",
    "instances_to_interior_boundary",
]
