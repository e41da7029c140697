"""Mask R-CNN for nuclei and its partially labelled variant (Feng et al.), with the parts they are assembled from.

- :class:`MaskRCNN` (``network.py``): Mask R-CNN from parts passed in; :meth:`MaskRCNN.build` makes the defaults.
- :class:`PartialMaskRCNN` (``partial.py``): Feng et al.'s additions as a subclass (centerness module, ignored
  negatives, extra proposals).
- :func:`build_mask_rcnn` (``factory.py``): both from one call with sizes and flags (the bundle's ``network_def``).
- parts: :class:`SmallBackbone`, :class:`RPNHead`, :class:`BoxHead`, :class:`MaskHead` (``parts.py``),
  :class:`CenternessModule` (``centerness.py``), :class:`DecomposedSelfAttention` (``decomposed_attention.py``),
  RoIAlign (``roi_align.py``), TorchScript-compatible box ops (``box_ops.py``), :class:`IoUMatcher` and :func:`nms`
  (``matching.py``).
"""

from __future__ import annotations

from .centerness import CenternessModule, component_peaks, ignore_matched_negatives, instance_boxes, pixel_anchors
from .decomposed_attention import DecomposedSelfAttention
from .factory import build_mask_rcnn
from .matching import IoUMatcher, nms
from .network import MaskRCNN, default_parts
from .partial import PartialMaskRCNN
from .parts import BoxHead, MaskHead, RPNHead, SmallBackbone
from .roi_align import RoIAlign

__all__ = [
    "BoxHead",
    "CenternessModule",
    "DecomposedSelfAttention",
    "IoUMatcher",
    "MaskHead",
    "MaskRCNN",
    "PartialMaskRCNN",
    "RPNHead",
    "RoIAlign",
    "SmallBackbone",
    "build_mask_rcnn",
    "component_peaks",
    "default_parts",
    "ignore_matched_negatives",
    "instance_boxes",
    "nms",
    "pixel_anchors",
]
