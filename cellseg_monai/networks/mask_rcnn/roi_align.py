"""RoIAlign (He et al., Mask R-CNN, ICCV 2017) written with ``torch.nn.functional.grid_sample`` (no torchvision).

Box convention (MONAI ``StandardMode`` with ``ij`` indexing, as in ``monai.apps.detection``): a box is
``(y0, x0, y1, x1)`` in continuous image coordinates where pixel ``i`` covers ``[i, i + 1)`` and has its centre
at ``i + 0.5``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellseg_monai.torchscript import shape_repr

__all__ = ["RoIAlign", "roi_align"]


def _as_rois(boxes: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    if isinstance(boxes, torch.Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes must be (K, 5) rows (batch index, y0, x0, y1, x1), got {shape_repr(boxes)}")
        return boxes
    rows: list[torch.Tensor] = []
    for b, bx in enumerate(boxes):
        if bx.ndim != 2 or bx.shape[1] != 4:
            raise ValueError(f"boxes[{b}] must be (K_b, 4) (y0, x0, y1, x1), got {shape_repr(bx)}")
        rows.append(torch.cat([torch.full_like(bx[:, :1], b), bx], dim=1))
    if len(rows) == 0:
        raise ValueError("boxes is an empty list")
    return torch.cat(rows, dim=0)


def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor | list[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> torch.Tensor:
    """Average of bilinear samples on a regular grid in each bin of each region.

    For a box ``(y0, x0, y1, x1)`` the region is ``[y0·s - o, y1·s - o] × [x0·s - o, x1·s - o]`` in feature-index
    coordinates (``s`` = ``spatial_scale``, ``o`` = 0.5 when ``aligned`` else 0: with ``aligned`` a box edge at
    image coordinate 0 lies on the left edge of feature pixel 0, whose centre is index 0). The region is cut into
    ``output_size`` bins; bin ``(p, q)`` averages ``sampling_ratio²`` bilinear samples at
    ``y = y_start + (p + (i + 0.5) / sampling_ratio) · bin_h`` (same in x). Samples outside the map take the
    value at the nearest border (index clamped to ``[0, H - 1]``, as torchvision does for samples within one
    pixel of the map; torchvision returns 0 further out).

    Args:
        features: (B, C, H, W) feature map.
        boxes: (K, 5) rows ``(batch index, y0, x0, y1, x1)``, or a list (or tuple) of B tensors (K_b, 4), in image
            pixels.
        output_size: bins per side, int or (OH, OW).
        spatial_scale: feature size / image size (1 / stride), e.g. 0.25 for a stride-4 map.
        sampling_ratio: samples per bin side, >= 1 (torchvision's adaptive ``<= 0`` is not supported).
        aligned: shift by half a pixel (Detectron2 / torchvision ``aligned=True``); False is the original RoIAlign.

    Returns:
        (K, C, OH, OW) pooled features, differentiable with respect to ``features``.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, H, W), got {shape_repr(features)}")
    if int(sampling_ratio) < 1:
        raise ValueError(f"sampling_ratio must be >= 1, got {sampling_ratio}")
    if isinstance(output_size, int):
        oh, ow = int(output_size), int(output_size)
    else:
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or (OH, OW), got {output_size}")
        oh, ow = int(output_size[0]), int(output_size[1])
    rois = _as_rois(boxes).to(features)
    k, c = rois.shape[0], features.shape[1]
    out = features.new_zeros((k, c, oh, ow))
    if k == 0:
        return out
    sr = int(sampling_ratio)
    h, w = features.shape[-2], features.shape[-1]
    offset = 0.5 if aligned else 0.0
    y0, x0 = rois[:, 1] * spatial_scale - offset, rois[:, 2] * spatial_scale - offset
    y1, x1 = rois[:, 3] * spatial_scale - offset, rois[:, 4] * spatial_scale - offset
    if not aligned:  # the original RoIAlign forces regions of at least one feature pixel
        y1, x1 = torch.maximum(y1, y0 + 1), torch.maximum(x1, x0 + 1)
    frac_y = (torch.arange(oh * sr, device=features.device, dtype=features.dtype) + 0.5) / (oh * sr)
    frac_x = (torch.arange(ow * sr, device=features.device, dtype=features.dtype) + 0.5) / (ow * sr)
    ys = y0[:, None] + frac_y[None] * (y1 - y0)[:, None]  # (K, OH·sr) feature-index rows
    xs = x0[:, None] + frac_x[None] * (x1 - x0)[:, None]  # (K, OW·sr)
    ys, xs = ys.clamp(0, h - 1), xs.clamp(0, w - 1)
    # grid_sample with align_corners=True maps -1 → index 0 and +1 → index size-1; the grid's last axis is (x, y)
    gy = 2 * ys / max(h - 1, 1) - 1
    gx = 2 * xs / max(w - 1, 1) - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (K, OH·sr, OW·sr, 2)
    batch_idx = rois[:, 0].long()
    images: list[int] = torch.unique(batch_idx).tolist()
    for b in images:
        sel = torch.nonzero(batch_idx == b).squeeze(1)
        g = grid[sel].reshape(1, -1, ow * sr, 2)  # regions stacked along the height axis
        sampled = F.grid_sample(features[b : b + 1], g, mode="bilinear", padding_mode="border", align_corners=True)
        sampled = _bin_mean(sampled.reshape(c, sel.numel(), oh, sr, ow, sr), sr).transpose(0, 1)
        out = out.index_copy(0, sel, sampled)
    return out


def _bin_mean(samples: torch.Tensor, sr: int) -> torch.Tensor:
    """(C, K, OH, sr, OW, sr) samples → (C, K, OH, OW) bin means, as ``samples.mean(dim=(3, 5))`` (bit-identical for
    sr <= 2: the same pairwise sums) but several times faster than that strided reduction: adds along x, then y."""
    row = samples[..., 0]
    for i in range(1, sr):
        row = row + samples[..., i]
    out = row[:, :, :, 0]
    for i in range(1, sr):
        out = out + row[:, :, :, i]
    return out / float(sr * sr)


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align` (same arguments; ``forward(features, boxes)``)."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float = 1.0,
        sampling_ratio: int = 2,
        aligned: bool = True,
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, features: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return roi_align(features, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)
