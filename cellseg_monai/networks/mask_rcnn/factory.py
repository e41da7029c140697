"""The version-1 way to make the detection network: sizes and flags in one call (what bundle configs call)."""

from __future__ import annotations

from collections.abc import Sequence

from cellseg_monai.networks.mask_rcnn.network import MaskRCNN
from cellseg_monai.networks.mask_rcnn.partial import PartialMaskRCNN

__all__ = ["build_mask_rcnn"]


def build_mask_rcnn(
    in_channels: int = 3,
    backbone_channels: Sequence[int] = (16, 32, 64, 128),
    fpn_channels: int = 64,
    anchor_sizes: Sequence[Sequence[int]] = ((8, 16), (24, 32), (48, 64)),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    use_attention: bool = True,
    attention_channels: int = 64,
    use_centerness: bool = True,
    nucleus_size: float = 16.0,
    centerness_threshold: float = 0.95,
    ignore_iou: float = 0.5,
    rpn_batch_size: int = 256,
    rpn_positive_fraction: float = 0.5,
    rpn_pre_nms_top_n: Sequence[int] = (1000, 2000),
    rpn_post_nms_top_n: Sequence[int] = (256, 500),
    rpn_nms_threshold: float = 0.7,
    box_batch_size: int = 128,
    box_positive_fraction: float = 0.25,
    box_fg_iou: float = 0.5,
    representation_size: int = 256,
    score_threshold: float = 0.05,
    detection_nms_threshold: float = 0.5,
    detections_per_image: int = 400,
    mask_threshold: float = 0.5,
    min_area: int = 4,
    size_divisible: int = 16,
    pretrained_path: str | None = None,
) -> MaskRCNN:
    """Feng et al.'s network by default: :meth:`PartialMaskRCNN.build` when ``use_centerness``, else
    :meth:`MaskRCNN.build`; decomposed attention of ``attention_channels`` on every FPN level when ``use_attention``.

    The arguments (and the initial weights under a given ``torch.manual_seed``) are those of ``MaskRCNN(...)`` before
    it took its parts as arguments; see :func:`~cellseg_monai.networks.mask_rcnn.network.default_parts`,
    :class:`PartialMaskRCNN` and :class:`MaskRCNN` for their meaning.
    """
    sizes = {
        "in_channels": in_channels,
        "backbone_channels": backbone_channels,
        "fpn_channels": fpn_channels,
        "anchor_sizes": anchor_sizes,
        "aspect_ratios": aspect_ratios,
        "attention_channels": attention_channels if use_attention else None,
        "rpn_batch_size": rpn_batch_size,
        "rpn_positive_fraction": rpn_positive_fraction,
        "rpn_pre_nms_top_n": rpn_pre_nms_top_n,
        "rpn_post_nms_top_n": rpn_post_nms_top_n,
        "rpn_nms_threshold": rpn_nms_threshold,
        "box_batch_size": box_batch_size,
        "box_positive_fraction": box_positive_fraction,
        "box_fg_iou": box_fg_iou,
        "representation_size": representation_size,
        "score_threshold": score_threshold,
        "detection_nms_threshold": detection_nms_threshold,
        "detections_per_image": detections_per_image,
        "mask_threshold": mask_threshold,
        "min_area": min_area,
        "size_divisible": size_divisible,
        "pretrained_path": pretrained_path,
    }
    if use_centerness:
        return PartialMaskRCNN.build(
            nucleus_size=nucleus_size, centerness_threshold=centerness_threshold, ignore_iou=ignore_iou, **sizes
        )
    return MaskRCNN.build(**sizes)
