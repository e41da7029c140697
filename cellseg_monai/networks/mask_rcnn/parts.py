"""The parts :class:`~cellseg_monai.networks.mask_rcnn.MaskRCNN` is assembled from, besides MONAI's
``FeaturePyramidNetwork`` and ``AnchorGenerator``: a small backbone, the RPN head, the box head and the mask head.

:class:`RPNHead` and :class:`BoxHead` each hold the layers of one stage together with that stage's sampling and
filtering settings (as torchvision's ``RegionProposalNetwork`` and ``RoIHeads`` do). ``MaskRCNN`` applies them: it
registers their layers under its own attribute names (``rpn_conv``, ``rpn_cls``, ``rpn_reg``, ``box_head``,
``box_cls``, ``box_reg``), the names of the weights the bundle ships, so those load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.apps.detection.utils.hard_negative_sampler import HardNegativeSampler
from torch import nn

from cellseg_monai.networks.mask_rcnn.matching import IoUMatcher

__all__ = ["BoxHead", "MaskHead", "RPNHead", "SmallBackbone"]


class SmallBackbone(nn.Module):
    """Conv-BN-ReLU encoder: a stride-2 stem then stages at strides 4, 8, 16 (C2, C3, C4).

    Args:
        in_channels: image channels.
        channels: (stem, C2, C3, C4) widths.

    ``forward(x)`` returns a dict ``{"c2", "c3", "c4"}`` (in that order) of (B, channels[i], H / 2^(i+1), W / 2^(i+1)).
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"channels must give (stem, C2, C3, C4) widths, got {channels}")

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.out_channels = list(channels[1:])
        self.stem = stage(in_channels, channels[0])
        self.stages = nn.ModuleList([stage(channels[i], channels[i + 1]) for i in range(3)])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        out: dict[str, torch.Tensor] = {}
        for i, s in enumerate(self.stages):
            x = s(x)
            out[f"c{i + 2}"] = x
        return out


class RPNHead(nn.Module):
    """Region proposal network (Ren et al., Faster R-CNN): layers, anchor matching and sampling, proposal filtering.

    Layers, shared by every FPN level: ``conv`` (3×3 conv + ReLU, C → C), ``cls`` (1×1, C → A objectness logits) and
    ``reg`` (1×1, C → 4A box deltas against the anchors, ``BoxCoder`` weights (1, 1, 1, 1)), A anchors per location.

    Args:
        in_channels: channels C of the FPN levels.
        num_anchors: anchors per location A (``AnchorGenerator.num_anchors_per_location()``, the same on each level).
        batch_size, positive_fraction: anchors sampled per image in training and their positive fraction (anchors of
            IoU >= 0.7 with a labelled box are positive, < 0.3 negative, each box keeps its best anchors).
        pre_nms_top_n, post_nms_top_n: proposals kept per image before / after NMS, as (training, inference).
        nms_threshold: IoU of the proposal NMS.

    Call :meth:`init_weights` for Faster R-CNN's initial output layers (N(0, 0.01) weights, zero biases). The part
    has no ``forward``: :meth:`MaskRCNN.rpn` applies its layers, which the network registers as its own.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        batch_size: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: Sequence[int] = (1000, 2000),
        post_nms_top_n: Sequence[int] = (256, 500),
        nms_threshold: float = 0.7,
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.cls = nn.Conv2d(in_channels, num_anchors, 1)
        self.reg = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        self.num_anchors = int(num_anchors)
        self.weights = (1.0, 1.0, 1.0, 1.0)
        self.coder = BoxCoder(weights=self.weights)
        self.matcher = IoUMatcher(0.7, 0.3, allow_low_quality_matches=True)
        self.sampler = HardNegativeSampler(batch_size, positive_fraction, min_neg=batch_size // 4, pool_size=20)
        self.pre_nms_top_n = tuple(int(v) for v in pre_nms_top_n)
        self.post_nms_top_n = tuple(int(v) for v in post_nms_top_n)
        self.nms_threshold = float(nms_threshold)

    def init_weights(self) -> None:
        for m in (self.cls, self.reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


class BoxHead(nn.Module):
    """Box head of Faster R-CNN on RoIAlign features: layers, proposal matching and sampling, detection filtering.

    Layers: ``trunk`` (flatten + two FC layers with ReLU, C·r·r → ``representation_size``), ``cls`` (→ 2 logits:
    background, nucleus) and ``reg`` (→ 4 box deltas, ``BoxCoder`` weights (10, 10, 5, 5)).

    Args:
        in_channels: channels C of the pooled features.
        roi_size: side r of the pooled features (:attr:`MaskRCNN.box_roi_size`, 7).
        representation_size: width of the two FC layers.
        batch_size, positive_fraction: proposals sampled per image in training and their positive fraction.
        fg_iou: proposal IoU with a labelled nucleus to be positive (below: negative).
        score_threshold, nms_threshold, detections_per_image: inference filtering of the decoded boxes.

    Call :meth:`init_weights` for Faster R-CNN's initial output layers (N(0, 0.01) class, N(0, 0.001) box weights).
    The part has no ``forward``: :meth:`MaskRCNN.box_predictions` applies its layers, registered by the network.
    """

    def __init__(
        self,
        in_channels: int,
        roi_size: int = 7,
        representation_size: int = 256,
        batch_size: int = 128,
        positive_fraction: float = 0.25,
        fg_iou: float = 0.5,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
        detections_per_image: int = 400,
    ) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * roi_size * roi_size, representation_size),
            nn.ReLU(inplace=True),
            nn.Linear(representation_size, representation_size),
            nn.ReLU(inplace=True),
        )
        self.cls = nn.Linear(representation_size, 2)
        self.reg = nn.Linear(representation_size, 4)
        self.roi_size = int(roi_size)
        self.weights = (10.0, 10.0, 5.0, 5.0)
        self.coder = BoxCoder(weights=self.weights)
        self.matcher = IoUMatcher(fg_iou, fg_iou, allow_low_quality_matches=False)
        self.sampler = HardNegativeSampler(batch_size, positive_fraction, min_neg=batch_size // 4, pool_size=20)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.detections_per_image = int(detections_per_image)

    def init_weights(self) -> None:
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.reg.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.reg.bias)


class MaskHead(nn.Sequential):
    """Mask head of Mask R-CNN: four 3×3 conv + ReLU, a 2× transposed conv + ReLU, a 1×1 conv to one logit.

    (K, C, r, r) RoIAlign features → (K, 1, 2r, 2r) mask logits (r = 14: 28×28 masks).
    """

    def __init__(self, in_channels: int, convs: int = 4) -> None:
        layers: list[nn.Module] = []
        for _ in range(convs):
            layers += [nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(in_channels, 1, 1)]
        super().__init__(*layers)
