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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample each RoI mask into its box and resolve overlaps by score.

    Mask cell ``(u, v)`` of an M×M mask covers ``[y0 + u·h/M, y0 + (u+1)·h/M)`` of box ``(y0, x0, y1, x1)``
    (h = y1 - y0); each image pixel inside the box takes the bilinear value of the mask at its centre. A pixel
    belongs to the highest-scoring instance whose probability there is >= ``threshold``.

    Args:
        masks: (K, M, M) mask probabilities in [0, 1].
        boxes: (K, 4) boxes ``(y0, x0, y1, x1)`` in image pixels (``monai.apps.detection`` StandardMode, ``ij``).
        scores: (K,) instance scores.
        image_size: (H, W) of the output.
        threshold: mask probability threshold.
        min_area: instances with fewer visible pixels after overlap resolution are dropped.

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
    owner = torch.full((h, w), -1, dtype=torch.long, device=device)
    best = torch.full((h, w), -1.0, device=device)
    order = torch.argsort(scores, descending=True)
    m = masks.shape[-1]
    paste_order: list[int] = order.tolist()
    for k in paste_order:
        y0, x0, y1, x1 = float(boxes[k, 0]), float(boxes[k, 1]), float(boxes[k, 2]), float(boxes[k, 3])
        if y1 - y0 <= 0 or x1 - x0 <= 0:
            continue
        r0, c0 = max(int(y0), 0), max(int(x0), 0)
        r1, c1 = min(int(torch.ceil(boxes[k, 2])), h), min(int(torch.ceil(boxes[k, 3])), w)
        if r1 <= r0 or c1 <= c0:
            continue
        ys = (torch.arange(r0, r1, device=device, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * m - 0.5
        xs = (torch.arange(c0, c1, device=device, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * m - 0.5
        gy = 2 * ys.clamp(0, m - 1) / max(m - 1, 1) - 1
        gx = 2 * xs.clamp(0, m - 1) / max(m - 1, 1) - 1
        grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]
        prob = F.grid_sample(masks[k][None, None].float(), grid, mode="bilinear", align_corners=True)[0, 0]
        inside = (ys[:, None] > -1) & (ys[:, None] < m) & (xs[None, :] > -1) & (xs[None, :] < m)
        window = owner[r0:r1, c0:c1]
        take = (prob >= threshold) & inside & (window < 0)  # higher scores were pasted first and keep their pixels
        window[take] = k
        best_window = best[r0:r1, c0:c1]
        best_window[take] = scores[k].float()
    labels = torch.zeros((h, w), dtype=torch.long, device=device)
    score_map = torch.zeros((h, w), dtype=torch.float32, device=device)
    new_id = 0
    for k in paste_order:
        sel = owner == k
        if int(sel.sum()) < max(min_area, 1):
            continue
        new_id += 1
        labels[sel] = new_id
        score_map[sel] = best[sel]
    return labels, score_map
