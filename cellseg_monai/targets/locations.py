"""Locations of interest (LACSS, Shrestha, Kuang & Yu, Communications Biology 6:232, 2023): the location proposal
network's grid targets and their decoding, and the local windows around locations. The network
(:class:`cellseg_monai.networks.lacss.Lacss`) and its loss (:class:`cellseg_monai.losses.lacss.LacssLoss`) both use
them, so they live here rather than inside either.

LPN grid convention: the LPN sees features at stride ``s``; grid cell (i, j) covers pixels
``[i·s, (i+1)·s) × [j·s, (j+1)·s)`` and has centre ``c_ij = (i·s + (s-1)/2, j·s + (s-1)/2)`` in pixel coordinates
(pixel (r, c) is at (r, c)). For every cell the head predicts a score logit and an offset ``o_ij`` in units of
``s``; the proposed location is ``c_ij + s·o_ij``.

Targets (:func:`encode_lpn_targets`): the nearest LOI ``p`` of each cell; the cell is positive when
``|p - c_ij| <= radius`` (so the cell holding a point is always positive when ``radius >= s/√2``), and its offset
target is ``(p - c_ij) / s``. :func:`decode_lpn` inverts it: every positive cell decodes exactly to its point.

Window convention (:func:`window_coordinates`, :func:`crop_patches`): a location rounded to pixel (r, c) gets rows
``r - S//2 .. r - S//2 + S - 1`` (and likewise columns), S the window side; pixels outside the image read as zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["crop_patches", "decode_lpn", "encode_lpn_targets", "grid_centers", "window_coordinates"]


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


def window_coordinates(centers: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the windows: (K, S) rows and (K, S) columns (may fall outside the image).

    Args:
        centers: (K, 2) integer (or float, rounded) (y, x) window centres.
        size: window side S in pixels.
    """
    c = torch.round(centers.float()).long()
    ar = torch.arange(size, device=centers.device) - size // 2
    return c[:, :1] + ar[None], c[:, 1:] + ar[None]


def crop_patches(maps: torch.Tensor, batch_index: torch.Tensor, centers: torch.Tensor, size: int) -> torch.Tensor:
    """Cut (C, S, S) windows out of batched maps, zero outside the image.

    Args:
        maps: (B, C, H, W) tensor.
        batch_index: (K,) int64 image index of each window.
        centers: (K, 2) (y, x) window centres (rounded to pixels).
        size: window side S.

    Returns:
        (K, C, S, S) tensor (differentiable w.r.t. ``maps``).
    """
    b, c, h, w = maps.shape
    k = centers.shape[0]
    if k == 0:
        return maps.new_zeros(0, c, size, size)
    pad = size // 2 + 1
    padded = F.pad(maps, (pad, pad, pad, pad))
    rows, cols = window_coordinates(centers, size)
    rows = (rows + pad).clamp(0, h + 2 * pad - 1)
    cols = (cols + pad).clamp(0, w + 2 * pad - 1)
    bi = batch_index.long()[:, None, None].expand(k, size, size)
    out = padded[bi, :, rows[:, :, None].expand(k, size, size), cols[:, None, :].expand(k, size, size)]
    return out.permute(0, 3, 1, 2)  # (K, S, S, C) -> (K, C, S, S)
