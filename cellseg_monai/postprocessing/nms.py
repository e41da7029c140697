"""Distance-based non-maximum suppression of point proposals (cell locations with a score).

Greedy, like box NMS with "overlap" replaced by "closer than ``min_distance``": proposals are visited by decreasing
score; a proposal is kept unless a kept one lies within ``min_distance`` (Euclidean, in pixels). LACSS (Shrestha,
Kuang & Yu, Communications Biology 2023) decodes its location proposal network this way; any point-proposal model
can use it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["distance_nms"]


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
    device = pts.device
    p = pts.detach().double().cpu().numpy()
    s = sc.detach().double().cpu().numpy()
    cand = np.nonzero(s >= score_threshold)[0]
    cand = cand[np.argsort(-s[cand], kind="stable")]
    if top_k is not None:
        cand = cand[:top_k]
    limit = len(cand) if max_output is None else max_output
    keep: list[int] = []
    if min_distance == 0:
        keep = cand[:limit].tolist()
    else:
        suppressed = np.zeros(len(cand), bool)
        d2 = min_distance * min_distance
        cp = p[cand]
        for i in range(len(cand)):
            if len(keep) >= limit:
                break
            if suppressed[i]:
                continue
            keep.append(int(cand[i]))
            suppressed |= ((cp - cp[i]) ** 2).sum(axis=1) < d2
    return torch.as_tensor(keep, dtype=torch.int64, device=device)
