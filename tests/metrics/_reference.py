"""Slow, obviously-correct reference implementations (per-object mask loops) used only by the metric tests."""

from __future__ import annotations

import itertools

import numpy as np


def ref_iou_matrix(gt: np.ndarray, pred: np.ndarray) -> tuple[list[int], list[int], np.ndarray]:
    """IoU matrix by per-object boolean masks; rows/cols in sorted id order."""
    gids = [int(i) for i in np.unique(gt) if i != 0]
    pids = [int(i) for i in np.unique(pred) if i != 0]
    out = np.zeros((len(gids), len(pids)))
    for a, g in enumerate(gids):
        gm = gt == g
        for b, p in enumerate(pids):
            pm = pred == p
            inter = np.logical_and(gm, pm).sum()
            if inter:
                out[a, b] = inter / np.logical_or(gm, pm).sum()
    return gids, pids, out


def ref_best_matching(iou: np.ndarray, t: float) -> tuple[int, float]:
    """Brute force over all one-to-one matchings of pairs with IoU >= t: (max #pairs, max summed IoU)."""
    n_g, n_p = iou.shape
    best = (0, 0.0)
    cols = list(range(n_p))
    for k in range(min(n_g, n_p), 0, -1):
        for rows in itertools.combinations(range(n_g), k):
            for perm in itertools.permutations(cols, k):
                vals = [iou[r, c] for r, c in zip(rows, perm, strict=True)]
                if all(v >= t and v > 0 for v in vals):
                    best = max(best, (k, float(sum(vals))))
        if best[0] == k:
            return best
    return best


def ref_aji(gt: np.ndarray, pred: np.ndarray) -> float:
    """Kumar et al. 2017 Algorithm 1 with per-object masks; a GT with no overlapping prediction adds |G| to U."""
    gids = [i for i in np.unique(gt) if i != 0]
    pids = [i for i in np.unique(pred) if i != 0]
    used = set()
    c = u = 0
    for g in gids:
        gm = gt == g
        best, best_j = 0.0, None
        for p in pids:
            pm = pred == p
            inter = np.logical_and(gm, pm).sum()
            iou = inter / np.logical_or(gm, pm).sum()
            if iou > best:
                best, best_j = iou, p
        if best_j is None:
            u += gm.sum()
            continue
        pm = pred == best_j
        c += np.logical_and(gm, pm).sum()
        u += np.logical_or(gm, pm).sum()
        used.add(best_j)
    for p in pids:
        if p not in used:
            u += (pred == p).sum()
    return 1.0 if u == 0 else c / u


def random_labels(rng: np.random.Generator, shape: tuple[int, int], n: int, rmax: int, id_max: int) -> np.ndarray:
    """Random overlapping discs painted in order (later ones on top), random non-consecutive ids."""
    h, w = shape
    out = np.zeros(shape, dtype=np.int64)
    ids = rng.choice(np.arange(1, id_max + 1), size=n, replace=False)
    for i in ids:
        r = int(rng.integers(1, rmax + 1))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, h), max(cx - r, 0), min(cx + r + 1, w)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        out[y0:y1, x0:x1][disc] = i
    return out


def shifted_relabelled(rng: np.random.Generator, labels: np.ndarray, shift: tuple[int, int], id_max: int) -> np.ndarray:
    """A fake prediction: the whole label image rolled by ``shift`` with ids mapped to new random ids."""
    ids = np.unique(labels)
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    lut[ids[ids > 0]] = rng.choice(np.arange(1, id_max + 1), size=int((ids > 0).sum()), replace=False)
    return lut[np.roll(labels, shift, axis=(0, 1))]
