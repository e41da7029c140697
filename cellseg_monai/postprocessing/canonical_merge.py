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

__all__ = [
    "affine_table",
    "canonical_instances",
    "canonical_point_instances",
    "merge_groups",
    "merge_point_groups",
]


def merge_groups(binary: np.ndarray, overlap: float = 0.5, score: np.ndarray | None = None) -> list[list[int]]:
    """Apply the merge rule |b ∩ m| / |m| ≥ ``overlap`` (m smaller, b bigger) until stable.

    Args:
        binary: (K, H, W) boolean instance masks.
        overlap: merge threshold on |b ∩ m| / |m|, in (0, 1].
        score: (K,) tie-break for equal areas (the lower score counts as the smaller instance); default zeros.

    Returns:
        Groups of original indices (each group sorted), in order of their smallest index; a group is the instances
        merged together. Empty masks form no group. (:func:`merge_point_groups` on the masks' pixels.)
    """
    binary = np.asarray(binary, dtype=bool)
    if binary.ndim != 3:
        raise ValueError(f"binary must be (K, H, W); got shape {binary.shape}.")
    index, pixels = np.nonzero(binary.reshape(len(binary), -1))
    return merge_point_groups(index, pixels, len(binary), overlap, score)


def _pair_counts(index: np.ndarray, pixels: np.ndarray, k: int) -> np.ndarray:
    """(K, K) float64 |i ∩ j|: the number of pixels that instances i and j share (the diagonal: their areas)."""
    order = np.argsort(pixels, kind="stable")
    pix, idx = pixels[order], index[order]
    codes = [idx * k + idx]
    d = 1
    while d < len(pix):  # pixels held by several instances are runs of the sorted pixels: pair run members d apart
        same = pix[d:] == pix[:-d]
        if not same.any():
            break
        a, b = idx[:-d][same], idx[d:][same]
        codes += [a * k + b, b * k + a]
        d += 1
    return np.bincount(np.concatenate(codes), minlength=k * k).reshape(k, k).astype(np.float64)


def merge_point_groups(
    index: np.ndarray, pixels: np.ndarray, num_instances: int, overlap: float = 0.5, score: np.ndarray | None = None
) -> list[list[int]]:
    """:func:`merge_groups` on instances given as pixel lists: instance ``index[i]`` holds pixel ``pixels[i]``.

    Args:
        index: (P,) ints in [0, K), K = ``num_instances``; pixels: (P,) flat pixel indices (any image size); each
            (instance, pixel) pair at most once.
        overlap, score: as :func:`merge_groups`.

    Returns:
        The groups of :func:`merge_groups` (instances without a pixel form no group).
    """
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap must be in (0, 1]; got {overlap!r}.")
    k = int(num_instances)
    index, pixels = np.asarray(index, dtype=np.int64).reshape(-1), np.asarray(pixels, dtype=np.int64).reshape(-1)
    score = np.zeros(k) if score is None else np.array(score, dtype=float).reshape(k)
    area = np.bincount(index, minlength=k).astype(np.float64)
    alive = area > 0
    members: dict[int, list[int]] = {i: [i] for i in range(k) if alive[i]}
    if len(members) < 2:
        return sorted(members.values())
    inter = _pair_counts(index, pixels, k)
    order = np.arange(k)
    group = np.arange(k)  # the surviving instance (group) that holds each instance
    size = int(pixels.max()) + 1

    def ratio_of(rows: np.ndarray | slice, cols: np.ndarray | slice) -> np.ndarray:
        # a is the smaller instance m of the pair (area, then score, then the higher index); -1 for dead ones
        area_a, area_b = area[rows, None], area[None, cols]
        score_a, score_b = score[rows, None], score[None, cols]
        order_a, order_b = order[rows, None], order[None, cols]
        smaller = (area_a < area_b) | (
            (area_a == area_b) & ((score_a < score_b) | ((score_a == score_b) & (order_a > order_b)))
        )
        return np.where(smaller & alive[rows, None] & alive[None, cols], inter[rows, cols] / area_a, -1.0)

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ratio_of(slice(None), slice(None))
        while True:
            m, b = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            if ratio[m, b] < overlap - 1e-12:
                break
            group[group == m] = b
            alive[m] = False
            score[b] = max(score[b], score[m])
            members[int(b)].extend(members.pop(int(m)))
            # b becomes b ∪ m: count its pixels shared with every group
            mask = np.zeros(size, dtype=bool)
            mask[pixels[group[index] == b]] = True
            sel = mask[pixels]
            shared = np.unique(group[index[sel]] * size + pixels[sel])
            inter[b] = inter[:, b] = np.bincount(shared // size, minlength=k)
            area[b] = inter[b, b]
            changed = np.array([m, b])
            ratio[changed] = ratio_of(changed, slice(None))
            ratio[:, changed] = ratio_of(slice(None), changed)
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
        return_groups: also return the groups of instance indices behind labels 1..K.

    Returns:
        (H, W) int32 labels, 0 = background, 1..K (and the groups). :func:`canonical_point_instances` on the pixels
        above ``threshold``.
    """
    prob = convert_to_numpy(masks).astype(np.float64)
    if prob.ndim != 3:
        raise ValueError(f"masks must be (N, H, W); got shape {prob.shape}.")
    if presence is not None:
        pres = convert_to_numpy(presence).astype(np.float64).reshape(-1)
        if pres.shape[0] != prob.shape[0]:
            raise ValueError(f"presence must have N = {prob.shape[0]} values; got {pres.shape[0]}.")
        prob = prob * pres[:, None, None]
    flat = prob.reshape(len(prob), -1)
    index, pixels = np.nonzero(flat > threshold)
    return canonical_point_instances(
        index,
        pixels,
        flat[index, pixels],
        len(prob),
        prob.shape[1:],
        threshold,
        overlap,
        min_area,
        merge,
        return_groups,
    )


def canonical_point_instances(
    index: np.ndarray,
    pixels: np.ndarray,
    prob: np.ndarray,
    num_instances: int,
    shape: tuple[int, ...],
    threshold: float = 0.5,
    overlap: float = 0.5,
    min_area: int = 1,
    merge: bool = True,
    return_groups: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[list[int]]]:
    """:func:`canonical_instances` on instances given as pixel lists, e.g. each instance rendered on its box only.

    Args:
        index: (P,) instance of each value, ints in [0, N), N = ``num_instances``.
        pixels: (P,) flat pixel index of each value in an image of ``shape`` (H, W); each (instance, pixel) pair at
            most once. Pixels not listed for an instance have probability <= threshold (are not its pixels).
        prob: (P,) the instance's probability p(s) · p(z) at that pixel.
        num_instances, shape: N and (H, W).
        threshold, overlap, min_area, merge, return_groups: as :func:`canonical_instances`.

    Returns:
        As :func:`canonical_instances`: (H, W) int32 labels 0..K (and the groups of instance indices).
    """
    prob = np.asarray(prob, dtype=np.float64).reshape(-1)
    binary = prob > threshold
    index = np.asarray(index, dtype=np.int64).reshape(-1)[binary]
    pixels = np.asarray(pixels, dtype=np.int64).reshape(-1)[binary]
    prob = prob[binary]
    labels = np.zeros(tuple(shape), dtype=np.int32)
    kept: list[list[int]] = []
    if len(prob) == 0:
        return (labels, kept) if return_groups else labels
    n = int(num_instances)
    if merge:
        groups = merge_point_groups(index, pixels, n, overlap, score=np.bincount(index, weights=prob, minlength=n))
    else:
        groups = [[int(i)] for i in np.unique(index)]
    group_of = np.full(n, -1, dtype=np.int64)
    for j, g in enumerate(groups):
        group_of[g] = j
    group = group_of[index]
    # each pixel goes to the group with the highest probability there (ties: the first group): sort by (pixel,
    # group), then take the first maximum of each pixel's run
    order = np.argsort(pixels * len(groups) + group)
    pix, group, prob = pixels[order], group[order], prob[order]
    start = np.ones(len(pix), dtype=bool)
    start[1:] = pix[1:] != pix[:-1]
    run = np.cumsum(start) - 1
    cand = np.flatnonzero(prob == np.maximum.reduceat(prob, np.flatnonzero(start))[run])
    first = np.ones(len(cand), dtype=bool)
    first[1:] = run[cand[1:]] != run[cand[:-1]]
    win_pix, win_group = pix[cand[first]], group[cand[first]]
    keep = np.bincount(win_group, minlength=len(groups)) >= max(1, min_area)
    lut = np.zeros(len(groups), dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    labels.reshape(-1)[win_pix] = lut[win_group]
    kept = [list(groups[j]) for j in np.flatnonzero(keep)]
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
