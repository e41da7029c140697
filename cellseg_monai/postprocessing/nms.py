"""Distance-based non-maximum suppression of point proposals (cell locations with a score).

Greedy, like box NMS with "overlap" replaced by "closer than ``min_distance``": proposals are visited by decreasing
score; a proposal is kept unless a kept one lies within ``min_distance`` (Euclidean, in pixels). LACSS (Shrestha,
Kuang & Yu, Communications Biology 2023) decodes its location proposal network this way; any point-proposal model
can use it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["distance_nms", "torch_distance_nms"]


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


def torch_distance_nms(
    points: torch.Tensor,
    scores: torch.Tensor,
    min_distance: float,
    score_threshold: float = 0.0,
    top_k: int | None = None,
    max_output: int | None = None,
) -> torch.Tensor:
    """:func:`distance_nms` on tensors, without argument checks (TorchScript-compatible, so networks can run it in
    their scripted ``forward``). Same arguments and returns; computed in float64 on the CPU."""
    p = points.detach().double().cpu()
    s = scores.detach().double().cpu()
    cand = torch.nonzero(s >= score_threshold)[:, 0]
    cand = cand[torch.argsort(-s[cand], stable=True)]
    if top_k is not None:
        cand = cand[:top_k]
    limit = cand.shape[0] if max_output is None else max_output
    if min_distance == 0:
        return cand[:limit].to(points.device)
    keep: list[int] = []
    suppressed = torch.zeros(cand.shape[0], dtype=torch.bool)
    d2 = min_distance * min_distance
    cp = p[cand]
    for i in range(cand.shape[0]):
        if len(keep) >= limit:
            break
        if bool(suppressed[i]):
            continue
        keep.append(i)
        suppressed |= ((cp - cp[i]) ** 2).sum(dim=1) < d2
    return cand[torch.tensor(keep, dtype=torch.int64)].to(points.device)
