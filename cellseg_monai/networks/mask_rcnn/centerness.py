"""Centerness + box module of Feng et al. on the highest-resolution FPN level.

Every pixel of the stride-``s`` feature map predicts a centerness logit (is it near the centre of a nucleus?) and a
box, regressed against an anchor of the median nucleus size centred on that pixel. Trained from the labelled
exemplars only (targets in :func:`cellseg_monai.losses.mask_rcnn.centerness_targets`, on the anchors of
:func:`cellseg_monai.targets.boxes.pixel_anchors`), it finds the unlabelled
nuclei by their similarity to the labelled ones. Its detections (centerness > 0.95, one per connected component, at
the peak) are (a) ignored regions for the RPN and box-head samplers in training and (b) extra proposals in
inference (:class:`cellseg_monai.networks.mask_rcnn.PartialMaskRCNN`).

Boxes follow ``monai.apps.detection``: ``StandardMode`` with ``ij`` indexing, ``(y0, x0, y1, x1)`` in image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.box_utils import box_iou
from monai.utils import convert_to_numpy
from scipy import ndimage
from torch import nn

from cellseg_monai.networks.mask_rcnn.box_ops import decode_boxes
from cellseg_monai.targets.boxes import instance_boxes, pixel_anchors

__all__ = ["CenternessModule", "component_peaks", "ignore_matched_negatives", "instance_boxes", "pixel_anchors"]


def ignore_matched_negatives(
    sample_labels: torch.Tensor, samples: torch.Tensor, predicted: torch.Tensor, iou_threshold: float = 0.5
) -> torch.Tensor:
    """Turn negatives that match a predicted nucleus into ignored samples (Feng et al.).

    Args:
        sample_labels: (A,) labels of anchors or proposals: >= 1 positive, 0 negative, -1 ignored.
        samples: (A, 4) anchor or proposal boxes.
        predicted: (P, 4) boxes of the centerness module.
        iou_threshold: a negative whose IoU with some predicted box is >= this becomes -1.

    Returns:
        A copy of ``sample_labels``; positives and already ignored samples are unchanged.
    """
    out = sample_labels.clone()
    if predicted.numel() == 0 or samples.numel() == 0:
        return out
    iou = box_iou(samples.float(), predicted.to(samples.device).float())
    matched = torch.as_tensor(iou).max(dim=1).values >= iou_threshold
    out[(sample_labels == 0) & matched] = -1
    return out


def component_peaks(prob: torch.Tensor, threshold: float) -> torch.Tensor:
    """Flat index (row · W + column) of the peak of every 8-connected component of ``prob > threshold``.

    Args:
        prob: (H, W) probabilities.
        threshold: components are the connected regions above it.

    Returns:
        (K,) int64 on ``prob``'s device, components in ``scipy.ndimage.label`` order (by their first pixel in raster
        order). In eager mode the peaks come from ``scipy.ndimage.maximum_position``; under TorchScript (which cannot
        call SciPy) from :func:`_torch_component_peaks`. The two agree except where a component's maximum is reached
        at several pixels (exactly equal float32 values): SciPy's pick among those follows NumPy's unstable sort,
        the TorchScript one is the first in raster order.
    """
    if torch.jit.is_scripting():
        return _torch_component_peaks(prob, threshold)
    else:
        return _scipy_component_peaks(prob, threshold)


def _scipy_component_peaks(prob: torch.Tensor, threshold: float) -> torch.Tensor:
    p = convert_to_numpy(prob)
    comp, n = ndimage.label(p > threshold, structure=np.ones((3, 3)))
    if n == 0:
        return torch.zeros((0,), dtype=torch.long, device=prob.device)
    peaks = ndimage.maximum_position(p, comp, index=np.arange(1, n + 1))
    return torch.tensor([r * p.shape[1] + c for r, c in peaks], dtype=torch.long, device=prob.device)


def _torch_component_peaks(prob: torch.Tensor, threshold: float) -> torch.Tensor:
    """:func:`component_peaks` in torch: each component takes the smallest flat index of its pixels (propagated by
    3×3 min-pooling within the mask until stable); ties of the maximum go to the first pixel in raster order."""
    h, w = prob.shape[0], prob.shape[1]
    mask = prob > threshold
    if not bool(mask.any()):
        return torch.zeros((0,), dtype=torch.long, device=prob.device)
    index = torch.arange(h * w, device=prob.device, dtype=torch.float64).reshape(1, 1, h, w)  # exact integers
    background = torch.full_like(index, float(h * w))
    first = torch.where(mask, index, background)
    while True:
        spread = torch.where(mask, -F.max_pool2d(-first, 3, stride=1, padding=1), background)
        if torch.equal(spread, first):
            break
        first = spread
    pixels = torch.nonzero(mask.flatten())[:, 0]  # raster order
    values = prob.flatten()[pixels]
    _, component = torch.unique(first.flatten()[pixels], return_inverse=True)  # sorted: ndimage.label's order
    k = int(component.max()) + 1
    peak = torch.full((k,), -float("inf"), dtype=values.dtype, device=prob.device)
    peak = peak.scatter_reduce(0, component, values, "amax")
    at_peak = values == peak[component]
    flat = torch.full((k,), h * w, dtype=torch.long, device=prob.device)
    return flat.scatter_reduce(0, component[at_peak], pixels[at_peak], "amin")


class CenternessModule(nn.Module):
    """Centerness logit and box deltas on one feature map, (B, C, h, w) → ((B, 1, h, w), (B, 4, h, w)).

    Args:
        in_channels: channels C of the feature map (the FPN's highest-resolution level).
        hidden_channels: width of the two 3×3 conv layers of the head.
        nucleus_size: initial anchor size (h, w) or side in image pixels; in training it follows the median size of
            the labelled nuclei (:meth:`update_anchor_size`) and is saved with the weights (buffer ``anchor_size``).
        momentum: weight of each batch's median in the running anchor size.
        threshold: centerness probability above which pixels form detections (0.95 in the paper).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int = 64,
        nucleus_size: float | Sequence[float] = 16.0,
        momentum: float = 0.1,
        threshold: float = 0.95,
    ) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.centerness = nn.Conv2d(hidden_channels, 1, 1)
        self.box = nn.Conv2d(hidden_channels, 4, 1)
        nn.init.constant_(self.centerness.bias, -2.0)  # start mostly "not a centre": few detections early on
        nn.init.zeros_(self.box.weight)
        nn.init.zeros_(self.box.bias)
        size = [float(nucleus_size)] * 2 if np.isscalar(nucleus_size) else [float(s) for s in nucleus_size]
        self.register_buffer("anchor_size", torch.tensor(size, dtype=torch.float32))
        self.momentum = float(momentum)
        self.threshold = float(threshold)

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.head(feature)
        return self.centerness(h), self.box(h)

    @torch.no_grad()
    def update_anchor_size(self, boxes: torch.Tensor) -> None:
        """Move the anchor size towards the median (h, w) of ``boxes`` (N, 4) (labelled nuclei of a batch)."""
        if boxes.numel() == 0:
            return
        median = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1).median(dim=0).values
        self.anchor_size.mul_(1 - self.momentum).add_(self.momentum * median.to(self.anchor_size))

    def detect(
        self, logits: torch.Tensor, deltas: torch.Tensor, stride: int, image_size: tuple[int, int] | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Nuclei found by the module: one box per connected component of ``sigmoid(logits) > threshold``.

        Args:
            logits: (B, 1, h, w) centerness logits; deltas: (B, 4, h, w) box deltas against :func:`pixel_anchors`.
            stride: image pixels per feature pixel.
            image_size: (H, W) to clip the boxes to; None keeps them unclipped.

        Returns:
            Per image ``(boxes (K, 4), scores (K,))``: the box decoded at each component's peak (8-connectivity)
            and the peak probability.
        """
        with torch.no_grad():  # a context, not the decorator: TorchScript compiles it
            h, w = logits.shape[-2], logits.shape[-1]
            logits, deltas = logits.float(), deltas.float()  # bfloat16 under a training autocast: peaks in float32
            prob = torch.sigmoid(logits[:, 0])
            anchors = pixel_anchors(h, w, stride, self.anchor_size).to(logits.device)
            out: list[tuple[torch.Tensor, torch.Tensor]] = []
            for i in range(logits.shape[0]):
                flat = component_peaks(prob[i], self.threshold)
                if flat.numel() == 0:
                    out.append((logits.new_zeros((0, 4)), logits.new_zeros((0,))))
                    continue
                d = deltas[i].reshape(4, -1)[:, flat].T
                boxes = decode_boxes(d.float(), anchors[flat], (1.0, 1.0, 1.0, 1.0))
                if image_size is not None:
                    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image_size[0])
                    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image_size[1])
                keep = ((boxes[:, 2] - boxes[:, 0]) > 1) & ((boxes[:, 3] - boxes[:, 1]) > 1)
                out.append((boxes[keep].to(logits.dtype), prob[i].reshape(-1)[flat][keep]))
            return out
