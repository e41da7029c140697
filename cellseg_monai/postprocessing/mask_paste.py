"""Paste per-box mask probabilities (Mask R-CNN's M×M RoI masks) into one instance label image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cellseg_monai.torchscript import shape_repr

__all__ = ["paste_masks"]


def paste_masks(
    masks: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_size: tuple[int, int],
    threshold: float = 0.5,
    min_area: int = 1,
    chunk_pixels: int = 1 << 22,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample each RoI mask into its box and resolve overlaps by score.

    Mask cell ``(u, v)`` of an M×M mask covers ``[y0 + u·h/M, y0 + (u+1)·h/M)`` of box ``(y0, x0, y1, x1)``
    (h = y1 - y0); each image pixel inside the box takes the bilinear value of the mask at its centre. A pixel
    belongs to the highest-scoring instance whose probability there is >= ``threshold``.

    Boxes are resampled together (grouped by window size, windows padded to the group's largest), and each pixel
    takes the best score rank among the boxes that claim it (a scatter ``amin``), so there is no per-box loop.

    Args:
        masks: (K, M, M) mask probabilities in [0, 1].
        boxes: (K, 4) boxes ``(y0, x0, y1, x1)`` in image pixels (``monai.apps.detection`` StandardMode, ``ij``).
        scores: (K,) instance scores.
        image_size: (H, W) of the output.
        threshold: mask probability threshold.
        min_area: instances with fewer visible pixels after overlap resolution are dropped.
        chunk_pixels: at most about this many window pixels are resampled at once (bounds the memory).

    Returns:
        ``(labels, score_map)``: (H, W) int64 labels 1..N numbered by decreasing score (0 = background), and the
        (H, W) float32 score of the instance at each pixel (0 on background).
    """
    if masks.ndim != 3 or list(boxes.shape) != [masks.shape[0], 4] or list(scores.shape) != [masks.shape[0]]:
        raise ValueError(
            f"expected masks (K, M, M), boxes (K, 4), scores (K,); got {shape_repr(masks)}, "
            f"{shape_repr(boxes)}, {shape_repr(scores)}"
        )
    h, w = int(image_size[0]), int(image_size[1])
    device = masks.device
    n = masks.shape[0]
    order = torch.argsort(scores, descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=device)
    # owner: per pixel (flat) the best score rank among the boxes that claim it; n where none does
    owner = torch.full((h * w,), n, dtype=torch.long, device=device)
    b = boxes.float()
    r0 = torch.floor(b[:, 0]).clamp(min=0).long()  # image pixel window [r0, r1) × [c0, c1) of each box
    c0 = torch.floor(b[:, 1]).clamp(min=0).long()
    r1 = torch.ceil(b[:, 2]).clamp(max=h).long()
    c1 = torch.ceil(b[:, 3]).clamp(max=w).long()
    ok = (b[:, 2] - b[:, 0] > 0) & (b[:, 3] - b[:, 1] > 0) & (r1 > r0) & (c1 > c0)
    side = torch.maximum(r1 - r0, c1 - c0).clamp(min=1).float()
    group = torch.where(ok, torch.ceil(torch.log2(side)).long(), -1)  # windows of sides in (2^(g-1), 2^g]
    groups: list[int] = torch.unique(group[ok]).tolist()
    for g in groups:
        members = torch.nonzero(group == g).squeeze(1)
        wh = int((r1 - r0)[members].max())
        ww = int((c1 - c0)[members].max())
        step = max(chunk_pixels // (wh * ww), 1)
        for s in range(0, members.numel(), step):
            sel = members[s : s + step]
            owner = _claim(
                owner, masks[sel], b[sel], r0[sel], c0[sel], r1[sel], c1[sel], rank[sel], wh, ww, w, threshold, n
            )
    # instances by decreasing score; those with fewer than min_area pixels are dropped
    area = torch.bincount(owner, minlength=n + 1)[:n]  # by score rank
    kept = area >= max(min_area, 1)
    new_id = torch.zeros(n + 1, dtype=torch.long, device=device)  # by rank; rank n (no owner) → 0
    new_id[:n] = torch.where(kept, torch.cumsum(kept.long(), 0), 0)
    owner_id = new_id[owner]
    labels = owner_id.reshape(h, w)
    score_by_rank = torch.zeros(n + 1, dtype=torch.float32, device=device)
    score_by_rank[:n] = torch.where(kept, scores[order].float(), 0.0)
    score_map = score_by_rank[owner].reshape(h, w)
    return labels, score_map


def _claim(
    owner: torch.Tensor,
    masks: torch.Tensor,
    boxes: torch.Tensor,
    r0: torch.Tensor,
    c0: torch.Tensor,
    r1: torch.Tensor,
    c1: torch.Tensor,
    rank: torch.Tensor,
    wh: int,
    ww: int,
    w: int,
    threshold: float,
    none: int,
) -> torch.Tensor:
    """``owner`` with the pixels that (K, M, M) ``masks`` claim (probability >= ``threshold`` inside their box and
    window ``[r0, r1) × [c0, c1)``) set to the smaller of their old value and the box's ``rank``; windows are padded
    to ``wh × ww``; ``none`` is the value of unclaimed pixels."""
    m = masks.shape[-1]
    y0, x0 = boxes[:, 0:1], boxes[:, 1:2]
    rows = r0[:, None] + torch.arange(wh, device=owner.device)  # (K, wh)
    cols = c0[:, None] + torch.arange(ww, device=owner.device)  # (K, ww)
    ys = (rows.float() + 0.5 - y0) / (boxes[:, 2:3] - y0) * m - 0.5  # mask coordinates of the pixel centres
    xs = (cols.float() + 0.5 - x0) / (boxes[:, 3:4] - x0) * m - 0.5
    gy = 2 * ys.clamp(0, m - 1) / max(m - 1, 1) - 1
    gx = 2 * xs.clamp(0, m - 1) / max(m - 1, 1) - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (K, wh, ww, 2)
    prob = F.grid_sample(masks[:, None].float(), grid, mode="bilinear", align_corners=True)[:, 0]
    row_in = (ys > -1) & (ys < m) & (rows < r1[:, None])
    col_in = (xs > -1) & (xs < m) & (cols < c1[:, None])
    take = (prob >= threshold) & row_in[:, :, None] & col_in[:, None, :]
    pixel = torch.where(take, rows[:, :, None] * w + cols[:, None, :], 0)
    value = torch.where(take, rank[:, None, None], none)  # unclaimed: pixel 0 gets ``none``, no change
    return owner.scatter_reduce(0, pixel.flatten(), value.flatten(), "amin")
