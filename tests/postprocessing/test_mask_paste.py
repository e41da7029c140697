"""paste_masks against the per-box loop it replaced (kept here as the reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cellseg_monai.postprocessing.mask_paste import paste_masks


def _loop_paste(masks, boxes, scores, image_size, threshold=0.5, min_area=1):
    """One box at a time in decreasing score; a pixel keeps the first box that claims it."""
    h, w = image_size
    owner = torch.full((h, w), -1, dtype=torch.long)
    best = torch.full((h, w), -1.0)
    order = torch.argsort(scores, descending=True).tolist()
    m = masks.shape[-1]
    for k in order:
        y0, x0, y1, x1 = (float(v) for v in boxes[k])
        if y1 - y0 <= 0 or x1 - x0 <= 0:
            continue
        r0, c0 = max(int(y0), 0), max(int(x0), 0)
        r1, c1 = min(int(torch.ceil(boxes[k, 2])), h), min(int(torch.ceil(boxes[k, 3])), w)
        if r1 <= r0 or c1 <= c0:
            continue
        ys = (torch.arange(r0, r1, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * m - 0.5
        xs = (torch.arange(c0, c1, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * m - 0.5
        gy = 2 * ys.clamp(0, m - 1) / max(m - 1, 1) - 1
        gx = 2 * xs.clamp(0, m - 1) / max(m - 1, 1) - 1
        grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]
        prob = F.grid_sample(masks[k][None, None].float(), grid, mode="bilinear", align_corners=True)[0, 0]
        inside = (ys[:, None] > -1) & (ys[:, None] < m) & (xs[None, :] > -1) & (xs[None, :] < m)
        window = owner[r0:r1, c0:c1]
        take = (prob >= threshold) & inside & (window < 0)
        window[take] = k
        best[r0:r1, c0:c1][take] = scores[k].float()
    labels = torch.zeros((h, w), dtype=torch.long)
    score_map = torch.zeros((h, w))
    new_id = 0
    for k in order:
        sel = owner == k
        if int(sel.sum()) < max(min_area, 1):
            continue
        new_id += 1
        labels[sel] = new_id
        score_map[sel] = best[sel]
    return labels, score_map


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("chunk", [1 << 22, 50])  # 50: every box alone (or a few) per chunk
def test_equals_per_box_loop(seed, chunk):
    g = torch.Generator().manual_seed(seed)
    k, size = 40, (50, 70)
    # boxes of many sizes, some past the image edges, some empty or inverted
    tl = torch.rand(k, 2, generator=g) * torch.tensor(size) - 6
    boxes = torch.cat([tl, tl + torch.rand(k, 2, generator=g) * 45 - 3], 1)
    masks = torch.rand(k, 28, 28, generator=g)
    scores = torch.rand(k, generator=g)
    for min_area in (1, 20):
        want = _loop_paste(masks, boxes, scores, size, 0.5, min_area)
        got = paste_masks(masks, boxes, scores, size, 0.5, min_area, chunk)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_no_boxes():
    labels, score = paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), torch.zeros(0), (5, 6))
    assert labels.shape == (5, 6) and labels.dtype == torch.long and not labels.any() and not score.any()
