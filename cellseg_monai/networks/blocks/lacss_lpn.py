"""LACSS location proposal network (LPN): per-cell score + offset regression on a stride-s grid, its targets, decoding.

Grid convention (Shrestha, Kuang & Yu, Communications Biology 6:232, 2023, "location proposal network"): the LPN sees
features at stride ``s``; grid cell (i, j) covers pixels ``[i·s, (i+1)·s) × [j·s, (j+1)·s)`` and has centre
``c_ij = (i·s + (s-1)/2, j·s + (s-1)/2)`` in pixel coordinates (pixel (r, c) is at (r, c)). For every cell the
head predicts a score logit and an offset ``o_ij`` in units of ``s``; the proposed location is ``c_ij + s·o_ij``.

Targets (:func:`encode_lpn_targets`): the nearest LOI ``p`` of each cell; the cell is positive when
``|p - c_ij| <= radius`` (so the cell holding a point is always positive when ``radius >= s/√2``), and its offset
target is ``(p - c_ij) / s``. :func:`decode_lpn` inverts it: every positive cell decodes exactly to its point.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["LocationProposalHead", "decode_lpn", "encode_lpn_targets", "grid_centers"]


def grid_centers(height: int, width: int, stride: int, device: torch.device | None = None) -> torch.Tensor:
    """(h, w, 2) float32 (y, x) pixel coordinates of the centres of an (h, w) grid of stride ``stride``."""
    half = (stride - 1) / 2.0
    yy = torch.arange(height, device=device, dtype=torch.float32) * stride + half
    xx = torch.arange(width, device=device, dtype=torch.float32) * stride + half
    return torch.stack(torch.meshgrid(yy, xx, indexing="ij"), dim=-1)


def encode_lpn_targets(
    points: torch.Tensor, grid_shape: tuple[int, int], stride: int, radius: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """LPN targets of one image from its LOIs.

    Args:
        points: (K, 2) float (y, x) pixel coordinates; K may be 0.
        grid_shape: (h, w) of the stride-``stride`` feature grid.
        stride: grid stride in pixels (>= 1).
        radius: a cell is positive when its nearest point is within ``radius`` pixels of its centre; default
            ``stride`` (every point has >= 1 positive cell).

    Returns:
        ``(score, offset)``: (1, h, w) float32 in {0, 1} and (2, h, w) float32 offsets ``(p - c) / stride`` to the
        nearest point (0 where there is no point).
    """
    h, w = grid_shape
    radius = float(stride) if radius is None else float(radius)
    centers = grid_centers(h, w, stride, points.device)  # (h, w, 2)
    if points.numel() == 0:
        return centers.new_zeros(1, h, w), centers.new_zeros(2, h, w)
    pts = points.to(centers.dtype).reshape(-1, 2)
    d2 = ((centers.reshape(-1, 1, 2) - pts.reshape(1, -1, 2)) ** 2).sum(-1)  # (h*w, K)
    best_d2, nearest = d2.min(dim=1)
    score = (best_d2 <= radius * radius).to(centers.dtype).reshape(1, h, w)
    offset = ((pts[nearest] - centers.reshape(-1, 2)) / stride).T.reshape(2, h, w)
    return score, offset


def decode_lpn(scores: torch.Tensor, offsets: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every cell's proposal: locations ``c + stride · offset`` and scores.

    Args:
        scores: (B, 1, h, w) scores (probabilities or logits; returned as given).
        offsets: (B, 2, h, w) offsets in units of ``stride``.
        stride: grid stride in pixels.

    Returns:
        ``(locations, scores)``: (B, h·w, 2) float (y, x) pixel coordinates and (B, h·w) scores, row-major cells.
    """
    b, _, h, w = scores.shape
    centers = grid_centers(h, w, stride, scores.device).to(offsets.dtype)
    loc = centers.permute(2, 0, 1)[None] + stride * offsets  # (B, 2, h, w)
    return loc.reshape(b, 2, h * w).transpose(1, 2), scores.reshape(b, h * w)


class LocationProposalHead(nn.Module):
    """Score + offset head on (B, C, h, w) features: two 3×3 conv layers, then 1×1 convs to 1 logit and 2 offsets.

    The score bias starts at ``log(prior / (1 - prior))`` (RetinaNet's focal-loss prior, prior 0.01) so an untrained
    network proposes few locations.

    Returns:
        ``(logits, offsets)``: (B, 1, h, w) score logits and (B, 2, h, w) offsets in units of the stride.
    """

    def __init__(self, in_channels: int, hidden: int = 32, prior: float = 0.01) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.score = nn.Conv2d(hidden, 1, 1)
        self.offset = nn.Conv2d(hidden, 2, 1)
        nn.init.constant_(self.score.bias, float(torch.log(torch.tensor(prior / (1 - prior)))))
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.body(x)
        return self.score(y), self.offset(y)
