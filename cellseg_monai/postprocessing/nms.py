"""Distance-based non-maximum suppression of point proposals (cell locations with a score).

Greedy, like box NMS with "overlap" replaced by "closer than ``min_distance``": proposals are visited by decreasing
score; a proposal is kept unless a kept one lies within ``min_distance`` (Euclidean, in pixels). LACSS (Shrestha,
Kuang & Yu, Communications Biology 2023) decodes its location proposal network this way; any point-proposal model
can use it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["close_pairs", "distance_nms", "torch_distance_nms"]


def distance_nms(
    points: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray,
    min_distance: float,
    score_threshold: float = 0.0,
    top_k: int | None = None,
    max_output: int | None = None,
) -> torch.Tensor:
    """Indices of the proposals kept by greedy distance NMS, by decreasing score.

    Args:
        points: (N, D) proposal coordinates (e.g. (y, x) in pixels).
        scores: (N,) scores (e.g. probabilities in [0, 1]).
        min_distance: a proposal closer than this (strictly) to a higher-scoring kept proposal is suppressed; 0
            keeps every proposal (only thresholding and top-k apply).
        score_threshold: proposals with ``score < score_threshold`` are dropped first.
        top_k: keep only the ``top_k`` best proposals before NMS (None: all).
        max_output: stop after this many kept proposals (None: no limit).

    Returns:
        (M,) int64 tensor of indices into ``points`` (on ``points``' device for tensors), sorted by decreasing score
        (ties: lower index first).
    """
    pts = torch.as_tensor(points)
    sc = torch.as_tensor(scores, device=pts.device)
    if pts.ndim != 2 or sc.ndim != 1 or pts.shape[0] != sc.shape[0]:
        raise ValueError(f"points must be (N, D) and scores (N,), got {tuple(pts.shape)} and {tuple(sc.shape)}")
    if min_distance < 0:
        raise ValueError(f"min_distance must be >= 0, got {min_distance}")
    for name, val in (("top_k", top_k), ("max_output", max_output)):
        if val is not None and val < 0:
            raise ValueError(f"{name} must be >= 0 or None, got {val}")
    return torch_distance_nms(pts, sc, min_distance, score_threshold, top_k, max_output)


def close_pairs(points: torch.Tensor, min_distance: float) -> torch.Tensor:
    """All pairs of points closer than ``min_distance`` (strictly, Euclidean), found without an N × N matrix.

    Points are sorted by their first coordinate; each is compared only with those whose first coordinate is less
    than ``min_distance`` (plus a rounding margin) above its own, so the work is N × (most points in such a band).

    Args:
        points: (N, D) float coordinates.
        min_distance: distance threshold (> 0).

    Returns:
        (M, 2) int64 pairs ``(i, j)``, ``i < j``, in no particular order.
    """
    n = points.shape[0]
    empty = torch.zeros(0, 2, dtype=torch.int64, device=points.device)
    if n < 2:
        return empty
    ys, by_y = torch.sort(points[:, 0], stable=True)
    # a margin well above rounding: the exact test below decides, the band only has to contain every close pair
    hi = torch.searchsorted(ys, ys + (min_distance + 1e-6 * (1.0 + min_distance)))
    first = torch.arange(n, device=points.device)
    width = int((hi - first).max()) - 1
    if width <= 0:
        return empty
    step = torch.arange(1, width + 1, device=points.device)
    a = first[:, None].expand(n, width)
    b = a + step[None]
    valid = b < hi[:, None]
    i, j = by_y[a[valid]], by_y[b[valid]]
    close = ((points[i] - points[j]) ** 2).sum(dim=1) < min_distance * min_distance
    i, j = i[close], j[close]
    return torch.stack([torch.minimum(i, j), torch.maximum(i, j)], dim=1)


def torch_distance_nms(
    points: torch.Tensor,
    scores: torch.Tensor,
    min_distance: float,
    score_threshold: float = 0.0,
    top_k: int | None = None,
    max_output: int | None = None,
) -> torch.Tensor:
    """:func:`distance_nms` on tensors, without argument checks (TorchScript-compatible, so networks can run it in
    their scripted ``forward``). Same arguments and returns; computed in float64 on the CPU.

    The greedy result is reached in rounds instead of one proposal at a time: in each round every undecided proposal
    with no undecided better neighbour is kept (all its better neighbours were suppressed, so greedy NMS keeps it
    too), and the undecided neighbours of the newly kept ones are suppressed. The best undecided proposal is always
    kept, so the rounds end; there are as many as the longest chain of neighbours, not as many as proposals."""
    p = points.detach().double().cpu()
    s = scores.detach().double().cpu()
    cand = torch.nonzero(s >= score_threshold)[:, 0]
    cand = cand[torch.argsort(-s[cand], stable=True)]
    if top_k is not None:
        cand = cand[:top_k]
    limit = cand.shape[0] if max_output is None else max_output
    if min_distance == 0:
        return cand[:limit].to(points.device)
    pairs = close_pairs(p[cand], min_distance)  # (M, 2) ranks, better first
    better, worse = pairs[:, 0], pairs[:, 1]
    undecided = torch.ones(cand.shape[0], dtype=torch.bool)
    kept = torch.zeros(cand.shape[0], dtype=torch.bool)
    while bool(undecided.any()):
        blocked = torch.zeros_like(undecided)
        blocked[worse[undecided[better] & undecided[worse]]] = True
        new = undecided & ~blocked
        kept |= new
        undecided &= ~new
        undecided[worse[new[better]]] = False
    return cand[torch.nonzero(kept)[:, 0][:limit]].to(points.device)
