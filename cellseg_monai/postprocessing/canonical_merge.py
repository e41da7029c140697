"""Post-processing P of the canonical-shape method: per-instance masks → instance label image; affine parameter table.

Costa, Gaudio, Campilho & Cardoso, "Explainable Weakly-Supervised Cell Nuclei Segmentation by Canonical Shape
Learning and Transformation", MIDL 2022. With 2 instances per feature cell the encoder often draws one nucleus
twice; P merges a smaller instance m into a bigger one b when |b ∩ m| / |m| ≥ 0.5.

Choices where the paper is silent (as far as could be checked):

* binarisation: an instance's pixels are those with p(s) · p(z) > ``threshold`` (0.5); empty instances are dropped;
* merge order: the pair with the largest ratio |b ∩ m| / |m| merges first (m = the smaller, ties: the lower total
  probability, then the higher index), b becomes b ∪ m with probability max(p_b, p_m), and the rule is applied
  again until no pair qualifies;
* overlaps between the surviving instances go to the instance with the higher probability at that pixel; instances
  left without a pixel (or below ``min_area``) are dropped and the labels renumbered 1..K in order of instance index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from monai.utils import convert_to_numpy

__all__ = ["affine_table", "canonical_instances", "merge_groups"]


def merge_groups(binary: np.ndarray, overlap: float = 0.5, score: np.ndarray | None = None) -> list[list[int]]:
    """Apply the merge rule |b ∩ m| / |m| ≥ ``overlap`` (m smaller, b bigger) until stable.

    Args:
        binary: (K, H, W) boolean instance masks.
        overlap: merge threshold on |b ∩ m| / |m|, in (0, 1].
        score: (K,) tie-break for equal areas (the lower score counts as the smaller instance); default zeros.

    Returns:
        Groups of original indices (each group sorted), in order of their smallest index; a group is the instances
        merged together. Empty masks form no group.
    """
    binary = np.asarray(binary, dtype=bool)
    if binary.ndim != 3:
        raise ValueError(f"binary must be (K, H, W); got shape {binary.shape}.")
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap must be in (0, 1]; got {overlap!r}.")
    k = binary.shape[0]
    score = np.zeros(k) if score is None else np.array(score, dtype=float).reshape(k)
    flat = binary.reshape(k, -1).astype(np.float64)
    area = flat.sum(1)
    alive = area > 0
    members: dict[int, list[int]] = {i: [i] for i in range(k) if alive[i]}
    if len(members) < 2:
        return sorted(members.values())
    inter = flat @ flat.T
    order = np.arange(k)
    with np.errstate(divide="ignore", invalid="ignore"):
        while True:
            # smaller[a, b]: a is the smaller instance m of the pair (area, then score, then the higher index)
            area_a, area_b = area[:, None], area[None, :]
            score_a, score_b = score[:, None], score[None, :]
            smaller = (area_a < area_b) | (
                (area_a == area_b) & ((score_a < score_b) | ((score_a == score_b) & (order[:, None] > order[None, :])))
            )
            ratio = np.where(smaller & alive[:, None] & alive[None, :], inter / area_a, -1.0)
            m, b = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            if ratio[m, b] < overlap - 1e-12:
                break
            flat[b] = np.maximum(flat[b], flat[m])
            area[b] = flat[b].sum()
            score[b] = max(score[b], score[m])
            alive[m] = False
            members[int(b)].extend(members.pop(int(m)))
            inter[b] = flat @ flat[b]
            inter[:, b] = inter[b]
    return sorted((sorted(g) for g in members.values()), key=lambda g: g[0])


def canonical_instances(
    masks: np.ndarray,
    presence: np.ndarray | None = None,
    threshold: float = 0.5,
    overlap: float = 0.5,
    min_area: int = 1,
    merge: bool = True,
    return_groups: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[list[int]]]:
    """Post-processing P: per-instance probabilities → (H, W) int32 instance label image.

    Args:
        masks: (N, H, W) per-instance probabilities in [0, 1] (numpy or torch): p(s) · p(z), or p(s) alone when
            ``presence`` is given.
        presence: optional (N,) p(z) to multiply ``masks`` with.
        threshold: instance pixels are those with probability > threshold.
        overlap: merge threshold on |b ∩ m| / |m| (0.5 in the paper).
        min_area: instances with fewer pixels after overlap resolution are dropped.
        merge: apply the merge rule (False = the "without P" ablation: threshold and overlap resolution only).

    Returns:
        (H, W) int32 labels, 0 = background, 1..K.
    """
    prob = convert_to_numpy(masks).astype(np.float64)
    if prob.ndim != 3:
        raise ValueError(f"masks must be (N, H, W); got shape {prob.shape}.")
    if presence is not None:
        pres = convert_to_numpy(presence).astype(np.float64).reshape(-1)
        if pres.shape[0] != prob.shape[0]:
            raise ValueError(f"presence must have N = {prob.shape[0]} values; got {pres.shape[0]}.")
        prob = prob * pres[:, None, None]
    binary = prob > threshold
    labels = np.zeros(prob.shape[1:], dtype=np.int32)
    kept: list[list[int]] = []
    if not binary.any():
        return (labels, kept) if return_groups else labels
    if merge:
        groups = merge_groups(binary, overlap, score=(prob * binary).reshape(len(prob), -1).sum(1))
    else:
        groups = [[i] for i in range(len(prob)) if binary[i].any()]
    gbin = np.stack([binary[g].any(0) for g in groups])
    gprob = np.stack([np.where(binary[g], prob[g], 0.0).max(0) for g in groups])
    gprob[~gbin] = -np.inf
    winner = gprob.argmax(0)
    fg = gbin.any(0)
    next_id = 1
    for j in range(len(groups)):
        sel = fg & (winner == j)
        if sel.sum() >= max(1, min_area):
            labels[sel] = next_id
            kept.append(list(groups[j]))
            next_id += 1
    return (labels, kept) if return_groups else labels


def affine_table(params: Mapping[str, object], index: int = 0, min_presence: float = 0.0) -> list[dict]:
    """One row per instance of an image: its affine placement, for the explainability CSV.

    Args:
        params: the network's :meth:`~cellseg_monai.networks.canonical_shape.CanonicalShapeNet.predict_parameters`
            dict ("L" (B, N, 2, 2) or (N, 2, 2), "t", "centre" (B, N, 2) or (N, 2), "presence" (B, N) or (N,)), in
            input pixels, x = column, y = row.
        index: image of the batch.
        min_presence: rows with p(z) < min_presence are left out.

    Returns:
        dicts with keys ``instance`` (index n), ``presence`` p(z), ``x``, ``y`` (centre c + t, pixels), ``tx``,
        ``ty`` (t relative to the cell centre), ``l11``, ``l21``, ``l22`` (L), and two decompositions of L:

        * triangular: L = [[1, 0], [k, 1]] · diag(sx, sy) → ``scale_x`` = l11, ``scale_y`` = l22 (pixels per
          canonical unit) and ``shear`` k = l21 / l11 (y += k x);
        * singular values: L = R(θ) diag(σ1, σ2) Vᵀ, σ1 ≥ σ2 → the canonical unit circle becomes an ellipse with
          semi-axes ``axis_major`` σ1 and ``axis_minor`` σ2 (pixels), major axis at ``rotation_deg`` θ in
          (-90, 90] degrees from +x towards +y (clockwise on screen, as rows grow downwards).
    """
    arrays = {}
    for key, nd in (("L", 4), ("t", 3), ("centre", 3), ("presence", 2)):
        if key not in params:
            raise ValueError(f"params needs key {key!r}; got keys {sorted(params)}.")
        a = convert_to_numpy(params[key]).astype(np.float64)
        if a.ndim == nd - 1:
            a = a[None]
        if a.ndim != nd:
            raise ValueError(f"params[{key!r}] has shape {a.shape}; expected {nd} dims (batch first) or {nd - 1}.")
        arrays[key] = a[index]
    L, t, c, pres = arrays["L"], arrays["t"], arrays["centre"], arrays["presence"]
    rows: list[dict] = []
    for n in range(L.shape[0]):
        if pres[n] < min_presence:
            continue
        u, s, _ = np.linalg.svd(L[n])
        theta = math.degrees(math.atan2(u[1, 0], u[0, 0]))
        theta = (theta + 90.0) % 180.0 - 90.0  # an axis, not a direction: [-90, 90) ...
        if theta <= -90.0 + 1e-9:  # ... then (-90, 90], robust to round-off at the vertical
            theta += 180.0
        l11, l21, l22 = L[n, 0, 0], L[n, 1, 0], L[n, 1, 1]
        rows.append(
            {
                "instance": n,
                "presence": float(pres[n]),
                "x": float(c[n, 0] + t[n, 0]),
                "y": float(c[n, 1] + t[n, 1]),
                "tx": float(t[n, 0]),
                "ty": float(t[n, 1]),
                "l11": float(l11),
                "l21": float(l21),
                "l22": float(l22),
                "scale_x": float(l11),
                "scale_y": float(l22),
                "shear": float(l21 / l11),
                "axis_major": float(s[0]),
                "axis_minor": float(s[1]),
                "rotation_deg": float(theta),
            }
        )
    return rows
