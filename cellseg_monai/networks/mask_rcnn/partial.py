"""Mask R-CNN from partially labelled exemplars (Feng et al., "Robust Nucleus Detection from Microscopical Image
with Partially Labeled Exemplars"): the centerness + box module finds the nuclei that are not labelled, so that they
are not learnt as background, and adds them to the proposals in inference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.apps.detection.utils.anchor_utils import AnchorGenerator
from torch import nn

from cellseg_monai.networks.mask_rcnn.centerness import CenternessModule, ignore_matched_negatives
from cellseg_monai.networks.mask_rcnn.network import MaskRCNN, default_parts
from cellseg_monai.networks.mask_rcnn.parts import BoxHead, RPNHead

__all__ = ["PartialMaskRCNN"]


class PartialMaskRCNN(MaskRCNN):
    """:class:`MaskRCNN` trained on images where only some nuclei are labelled (Feng et al.).

    What differs from Mask R-CNN (everything else is the parent's):

    - a :class:`CenternessModule` on the highest-resolution FPN level (P2), trained from the labelled exemplars by
      :class:`~cellseg_monai.losses.mask_rcnn.MaskRCNNLoss`; its detections are the unlabelled nuclei found
      (:meth:`unlabelled_nuclei`);
    - training: RPN anchors and box-head proposals that match no labelled nucleus but have IoU >= ``ignore_iou``
      with a detection are ignored instead of sampled as background (:meth:`negatives_to_ignore`); the module's
      anchor size follows the median size of the labelled nuclei (:meth:`labelled_boxes`); the training dict adds
      ``centerness_logits`` (B, 1, h, w), ``centerness_deltas`` (B, 4, h, w), ``centerness_stride`` (int) and
      ``centerness_anchor_size`` (2,);
    - inference: the detections are added to the RPN proposals.

    Args:
        backbone, fpn, anchor_generator, rpn_head, box_head, mask_head, attention, ...: see :class:`MaskRCNN`
            (Feng et al. put a decomposed self-attention on every FPN level).
        centerness: the centerness + box module, its input channels those of the FPN levels.
        ignore_iou: negatives with IoU >= this with a module detection are ignored.
    """

    def __init__(
        self,
        backbone: nn.Module,
        fpn: nn.Module,
        anchor_generator: AnchorGenerator,
        rpn_head: RPNHead,
        box_head: BoxHead,
        mask_head: nn.Module,
        centerness: CenternessModule,
        ignore_iou: float = 0.5,
        attention: Sequence[nn.Module] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(backbone, fpn, anchor_generator, rpn_head, box_head, mask_head, attention, **settings)
        self.centerness = centerness
        self.ignore_iou = float(ignore_iou)

    @classmethod
    def build(  # type: ignore[override]
        cls,
        attention_channels: int | None = 64,
        nucleus_size: float = 16.0,
        centerness_threshold: float = 0.95,
        ignore_iou: float = 0.5,
        mask_threshold: float = 0.5,
        min_area: int = 4,
        size_divisible: int = 16,
        pretrained_path: str | None = None,
        **sizes: Any,
    ) -> PartialMaskRCNN:
        """The network of the ``partial_maskrcnn`` bundle: :func:`default_parts` (``sizes`` are its arguments) with
        decomposed attention of ``attention_channels`` (None: none) and a centerness module.

        Args:
            nucleus_size: initial anchor side of the centerness module, in pixels (then the running median size).
            centerness_threshold: centerness probability above which the module detects a nucleus (0.95).
            ignore_iou, mask_threshold, min_area, size_divisible: see the classes.
            pretrained_path: a local state-dict file loaded with :meth:`load_pretrained`; None trains from scratch.
        """
        parts = default_parts(attention_channels=attention_channels, **sizes)
        channels = parts["rpn_head"].conv[0].in_channels
        net = cls(
            **parts,
            centerness=CenternessModule(channels, channels, nucleus_size, threshold=centerness_threshold),
            ignore_iou=ignore_iou,
            mask_threshold=mask_threshold,
            min_area=min_area,
            size_divisible=size_divisible,
        )
        if pretrained_path:
            net.load_pretrained(pretrained_path)
        return net

    def unlabelled_nuclei(
        self, feats: list[torch.Tensor], image_size: tuple[int, int]
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """One box per connected component of centerness > threshold on P2 (:meth:`CenternessModule.detect`)."""
        logits, deltas = self.centerness(feats[0])
        found = [
            det[0] for det in self.centerness.detect(logits.detach(), deltas.detach(), self.strides[0], image_size)
        ]
        return found, {"centerness_logits": logits, "centerness_deltas": deltas}

    def labelled_boxes(self, labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The parent's boxes; the centerness module's anchor size moves towards their median size."""
        gts = super().labelled_boxes(labels)
        self.centerness.update_anchor_size(torch.cat([g[0] for g in gts], 0))
        return gts

    def negatives_to_ignore(
        self, sample_labels: torch.Tensor, samples: torch.Tensor, found: torch.Tensor
    ) -> torch.Tensor:
        """Negatives of IoU >= ``ignore_iou`` with an unlabelled nucleus found become ignored (-1)."""
        return ignore_matched_negatives(sample_labels, samples, found, self.ignore_iou)

    def _training_outputs(
        self,
        feats: list[torch.Tensor],
        anchors: torch.Tensor,
        rpn_logits: torch.Tensor,
        rpn_deltas: torch.Tensor,
        proposals: list[torch.Tensor],
        found: list[torch.Tensor],
        labels: torch.Tensor,
        side: dict[str, torch.Tensor],
    ) -> dict:
        out = super()._training_outputs(feats, anchors, rpn_logits, rpn_deltas, proposals, found, labels, side)
        out.update(
            centerness_logits=side["centerness_logits"],
            centerness_deltas=side["centerness_deltas"],
            centerness_stride=self.strides[0],
            centerness_anchor_size=self.centerness.anchor_size.clone(),
        )
        return out
