"""Mask R-CNN losses (RPN, box head, mask head) and Feng et al.'s centerness + box module loss.

The network (:class:`cellseg_monai.networks.mask_rcnn.MaskRCNN`) matches and samples anchors and proposals in its
training forward (it owns the anchors and proposals); this module holds the loss math and the centerness targets,
which depend on the labels only:

- RPN (Ren et al., Faster R-CNN, Eq. 1): BCE over sampled anchors + smooth-L1 (β = 1/9) over positives, both
  divided by the number of sampled anchors.
- Box head: cross-entropy over sampled proposals + smooth-L1 (β = 1) over positives / number sampled.
- Mask head (He et al., Mask R-CNN): mean per-pixel BCE of the 28×28 masks of positive proposals.
- Centerness module (Feng et al.): on the stride-s map of the highest-resolution FPN level, the central 30 % box of
  each labelled nucleus is positive, the rest of its mask negative, everything else (background and unlabelled
  nuclei alike) ignored; per image up to 512 pixels are sampled, at most 1:1 negatives to positives (MONAI's
  ``HardNegativeSampler``); BCE on the sampled pixels + smooth-L1 (β = 1/9) of the box deltas of positive pixels
  against an anchor of the median nucleus size centred on the pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.apps.detection.utils.hard_negative_sampler import HardNegativeSampler
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from cellseg_monai.targets.boxes import instance_boxes, pixel_anchors

__all__ = [
    "MaskRCNNLoss",
    "box_head_loss",
    "centerness_loss",
    "centerness_targets",
    "mask_loss",
    "rpn_loss",
]

_CENTRE_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    return x.sum() if reduction == LossReduction.SUM.value else x.mean()


def rpn_loss(output: Mapping[str, Any], reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """RPN objectness BCE and box smooth-L1 (β = 1/9) from :class:`MaskRCNN`'s training outputs."""
    logits, labels = output["rpn_logits"], output["rpn_labels"]
    if logits.numel() == 0:
        zero = output["rpn_deltas"].sum() * 0.0 + logits.sum() * 0.0
        return zero, zero
    cls = F.binary_cross_entropy_with_logits(logits, labels.to(logits), reduction=reduction)
    reg = F.smooth_l1_loss(output["rpn_deltas"], output["rpn_targets"], beta=1 / 9, reduction="sum")
    return cls, reg / (1 if reduction == "sum" else max(1, logits.numel()))


def box_head_loss(output: Mapping[str, Any], reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Box-head cross-entropy (background / nucleus) and smooth-L1 (β = 1) of the positive proposals' deltas."""
    logits, labels = output["box_logits"], output["box_labels"]
    if logits.numel() == 0:
        zero = logits.sum() * 0.0 + output["box_deltas"].sum() * 0.0
        return zero, zero
    cls = F.cross_entropy(logits, labels.long(), reduction=reduction)
    reg = F.smooth_l1_loss(output["box_deltas"], output["box_targets"], beta=1.0, reduction="sum")
    return cls, reg / (1 if reduction == "sum" else max(1, labels.numel()))


def mask_loss(output: Mapping[str, Any], reduction: str = "mean") -> torch.Tensor:
    """Per-pixel BCE of the (Q, 28, 28) mask logits of positive proposals; 0 without positives."""
    logits = output["mask_logits"]
    if logits.numel() == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits, output["mask_targets"].to(logits), reduction=reduction)


def centerness_targets(
    labels: torch.Tensor,
    stride: int,
    map_size: Sequence[int],
    anchor_size: Sequence[float] | torch.Tensor,
    centre_fraction: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centerness classes and box-regression targets of Feng et al. on a stride-``stride`` map.

    Feature pixel (i, j) stands for image pixel ``(i·stride + stride//2, j·stride + stride//2)`` (the anchor centres
    of MONAI's ``AnchorGenerator``). For a labelled nucleus with box ``(y0, x0, y1, x1)`` (height h, width w) a pixel
    of its mask is positive when its centre lies in the central box ``|y + 0.5 - (y0 + y1)/2| <= centre_fraction/2
    · h`` (same in x); the sampled pixel of the nucleus nearest to its box centre is always positive, so that
    nuclei smaller than the stride still have one. The other pixels of its mask are negative; all other pixels
    (background and nuclei missing from the partial labels) are ignored.

    Args:
        labels: (B, 1, H, W) integer instance labels, 0 = unlabelled.
        stride: image pixels per map pixel.
        map_size: (h, w) of the map; labels are zero-padded (or cropped) to (h·stride, w·stride).
        anchor_size: (2,) anchor (height, width) in image pixels.
        centre_fraction: side of the central box as a fraction of the nucleus box (0.3).

    Returns:
        ``(classes, box_targets)``: (B, h, w) int64 in {1 positive, 0 negative, -1 ignored} and (B, h, w, 4) deltas
        of each positive pixel's nucleus box against its anchor (``BoxCoder`` weights 1; 0 elsewhere).
    """
    if labels.ndim != 4 or labels.shape[1] != 1:
        raise ValueError(f"labels must be (B, 1, H, W), got {tuple(labels.shape)}")
    hm, wm = int(map_size[0]), int(map_size[1])
    b = labels.shape[0]
    device = labels.device
    anchors = pixel_anchors(hm, wm, stride, torch.as_tensor(anchor_size, dtype=torch.float32).cpu())
    classes = torch.full((b, hm * wm), -1, dtype=torch.int64)
    boxes_t = torch.zeros((b, hm * wm, 4), dtype=torch.float32)
    off = stride // 2
    for i in range(b):
        lab = labels[i, 0].detach().cpu().long()
        full = torch.zeros((hm * stride, wm * stride), dtype=torch.long)
        hh, ww = min(lab.shape[0], full.shape[0]), min(lab.shape[1], full.shape[1])
        full[:hh, :ww] = lab[:hh, :ww]
        sampled = full[off::stride, off::stride][:hm, :wm].reshape(-1)
        boxes, ids = instance_boxes(lab)
        if ids.numel() == 0:
            continue
        centre_y = torch.arange(hm, dtype=torch.float32).repeat_interleave(wm) * stride + off + 0.5
        centre_x = torch.arange(wm, dtype=torch.float32).repeat(hm) * stride + off + 0.5
        classes[i, sampled > 0] = 0
        lookup = torch.zeros(int(ids.max()) + 1, dtype=torch.long)
        lookup[ids] = torch.arange(ids.numel())
        for k in ids.tolist():
            pix = torch.nonzero(sampled == k).squeeze(1)
            if pix.numel() == 0:
                continue
            y0, x0, y1, x1 = boxes[lookup[k]].tolist()
            cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
            dy, dx = (centre_y[pix] - cy).abs(), (centre_x[pix] - cx).abs()
            inside = (dy <= centre_fraction / 2 * (y1 - y0)) & (dx <= centre_fraction / 2 * (x1 - x0))
            inside[torch.argmin(dy**2 + dx**2)] = True
            pos = pix[inside]
            classes[i, pos] = 1
            gt = boxes[lookup[k]].expand(pos.numel(), 4)
            boxes_t[i, pos] = _CENTRE_CODER.encode_single(gt, anchors[pos])
    return classes.reshape(b, hm, wm).to(device), boxes_t.reshape(b, hm, wm, 4).to(device)


def centerness_loss(
    output: Mapping[str, Any],
    labels: torch.Tensor,
    sampler: HardNegativeSampler,
    centre_fraction: float = 0.3,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centerness BCE over sampled pixels and box smooth-L1 (β = 1/9) over sampled positives (Feng et al.)."""
    logits, deltas = output["centerness_logits"], output["centerness_deltas"]
    b, _, hm, wm = logits.shape
    classes, box_t = centerness_targets(
        labels, int(output["centerness_stride"]), (hm, wm), output["centerness_anchor_size"], centre_fraction
    )
    flat_logits = logits.reshape(b, -1)
    flat_deltas = deltas.reshape(b, 4, -1).transpose(1, 2)
    sel_logits, sel_labels, pos_d, pos_t = [], [], [], []
    for i in range(b):
        pos, neg = sampler.select_samples_per_img(classes[i].reshape(-1), torch.sigmoid(flat_logits[i].detach()))
        sel = torch.nonzero(pos | neg).squeeze(1)
        sel_logits.append(flat_logits[i, sel])
        sel_labels.append(pos[sel].float())
        p = torch.nonzero(pos).squeeze(1)
        pos_d.append(flat_deltas[i, p])
        pos_t.append(box_t[i].reshape(-1, 4)[p])
    x, y = torch.cat(sel_logits), torch.cat(sel_labels)
    if x.numel() == 0:
        zero = logits.sum() * 0.0 + deltas.sum() * 0.0
        return zero, zero
    cls = F.binary_cross_entropy_with_logits(x, y.to(x), reduction=reduction)
    reg = F.smooth_l1_loss(torch.cat(pos_d), torch.cat(pos_t).to(x), beta=1 / 9, reduction="sum")
    return cls, reg / (1 if reduction == "sum" else max(1, x.numel()))


class MaskRCNNLoss(_Loss):
    """Weighted sum of the Mask R-CNN and centerness-module losses.

    ``forward(output, labels)``: ``output`` is :class:`cellseg_monai.networks.mask_rcnn.MaskRCNN`'s training dict,
    ``labels`` the (B, 1, H, W) partial instance labels (used by the centerness targets). Returns a scalar; the
    unweighted terms of the last call are in ``self.last_terms`` (floats) for logging.

    Args:
        weights: weight per term (``rpn_cls``, ``rpn_box``, ``box_cls``, ``box_reg``, ``mask``, ``centerness``,
            ``centerness_box``); missing names weigh 1.
        centerness_samples: pixels sampled per image for the centerness loss (512).
        centerness_positive_fraction: at most this fraction of them positive (0.5 = up to 1:1).
        centre_fraction: central box fraction of the positives (0.3).
        centerness_only: train the centerness module alone (warm-up; Feng et al.'s DH25-pa-warmup); switched per
            epoch by :class:`cellseg_monai.handlers.CenternessWarmup`.
        reduction: ``"mean"`` (per-term means, as in the papers) or ``"sum"``.
    """

    TERMS = ("rpn_cls", "rpn_box", "box_cls", "box_reg", "mask", "centerness", "centerness_box")

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        centerness_samples: int = 512,
        centerness_positive_fraction: float = 0.5,
        centre_fraction: float = 0.3,
        centerness_only: bool = False,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if self.reduction == LossReduction.NONE.value:
            raise ValueError("MaskRCNNLoss sums several terms; reduction must be 'mean' or 'sum'")
        unknown = set(weights or {}) - set(self.TERMS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; terms are {self.TERMS}")
        self.weights = {t: float((weights or {}).get(t, 1.0)) for t in self.TERMS}
        self.sampler = HardNegativeSampler(centerness_samples, centerness_positive_fraction, min_neg=1, pool_size=20)
        self.centre_fraction = float(centre_fraction)
        self.centerness_only = bool(centerness_only)
        self.last_terms: dict[str, float] = {}

    def forward(self, output: Mapping[str, Any], labels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not isinstance(output, Mapping) or "rpn_logits" not in output:
            raise TypeError(
                "MaskRCNNLoss expects the training output dict of MaskRCNN (call the network as "
                "network(images, labels) in train mode, e.g. with PrepareBatchExtraInput(extra_keys='label'))"
            )
        terms: dict[str, torch.Tensor] = {}
        has_module = "centerness_logits" in output
        if self.centerness_only and not has_module:
            raise ValueError("centerness warm-up needs the centerness module (use_centerness=True)")
        if not self.centerness_only:
            terms["rpn_cls"], terms["rpn_box"] = rpn_loss(output, self.reduction)
            terms["box_cls"], terms["box_reg"] = box_head_loss(output, self.reduction)
            terms["mask"] = mask_loss(output, self.reduction)
        if has_module:
            terms["centerness"], terms["centerness_box"] = centerness_loss(
                output, labels, self.sampler, self.centre_fraction, self.reduction
            )
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        total = sum(self.weights[k] * v for k, v in terms.items())
        if not np.isfinite(float(total.detach())):
            raise FloatingPointError(f"MaskRCNNLoss is not finite: {self.last_terms}")
        return total
