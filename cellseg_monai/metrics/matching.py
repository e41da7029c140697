"""One matching core for every instance metric: sparse overlap counts, IoU, optimal and score-ranked matching.

The overlap of two instance label images is computed from a single pass over the pixels where both are
foreground: each pixel contributes one count to its ``(gt id, pred id)`` pair (``np.bincount`` on paired,
relabelled ids). No per-object mask loop is made, so thousands of objects take milliseconds.

Two matchings are provided:

* :func:`match` - optimal one-to-one matching at IoU threshold ``t`` (pairs with ``IoU >= t``; maximises the
  number of matches, then the summed IoU; ``scipy.optimize.linear_sum_assignment`` per connected component of the
  candidate graph). For ``t > 0.5`` candidate pairs are disjoint and the matching is unique (Kaggle DSB 2018,
  stardist ``matching``).
* :func:`match_greedy` - score-ranked greedy matching (COCO / LACSS): predictions sorted by score (descending)
  each take the unmatched GT with the highest IoU ``>= t``.

``t = 1.0`` means ``IoU >= 1.0``, i.e. identical masks (IoU is computed as ``intersection / union`` of integer
pixel counts, so a perfect match is exactly 1.0).

Example:
    >>> import numpy as np
    >>> gt = np.zeros((4, 6), dtype=np.int32)
    >>> gt[:, :2] = 1; gt[:, 3:6] = 7          # two GT objects, ids need not be consecutive
    >>> pred = np.zeros_like(gt)
    >>> pred[:, :2] = 5; pred[:2, 3:6] = 2      # one perfect, one covering half of GT 7
    >>> ov = overlap(gt, pred)
    >>> ov.gt_ids.tolist(), ov.pred_ids.tolist()
    ([1, 7], [2, 5])
    >>> ov.iou_matrix().tolist()
    [[0.0, 1.0], [0.5, 0.0]]
    >>> m = match(ov, 0.5)
    >>> (m.tp, m.fp, m.fn), m.gt_ids.tolist(), m.pred_ids.tolist()
    ((2, 0, 0), [1, 7], [5, 2])
    >>> m = match(ov, 0.75)
    >>> (m.tp, m.fp, m.fn)
    (1, 1, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.utils import convert_to_numpy
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "Overlap",
    "Matching",
    "as_label_image",
    "overlap",
    "iou_matrix",
    "match",
    "match_greedy",
    "match_labels",
    "scores_by_index",
    "ImageMatches",
]

# dense (n_gt + 1) * (n_pred + 1) bincount is used below this size, np.unique above it
_DENSE_PAIR_LIMIT = 1 << 24


def as_label_image(x: Any, name: str = "labels") -> np.ndarray:
    """Return ``x`` as a 2D non-negative integer numpy array (H, W).

    Accepts numpy arrays, torch tensors / MetaTensors, and arrays with leading singleton dimensions
    ((1, H, W), (1, 1, H, W)). Float arrays are accepted only when they hold whole numbers.

    Raises:
        TypeError: not array-like, or a non-integral float / complex array.
        ValueError: not 2D after squeezing leading singletons, or negative labels.
    """
    x = convert_to_numpy(x, wrap_sequence=True)  # torch.Tensor / MetaTensor / nested sequences
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:  # pragma: no cover - defensive
            raise TypeError(f"{name}: expected an array, got {type(x).__name__}") from e
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a label image (H, W) (or with leading singleton dims), got shape {x.shape}")
    if x.dtype == bool:
        return x.astype(np.int64)
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)) or not np.array_equal(x, np.round(x)):
            raise TypeError(f"{name}: float label image holds non-integer values; pass integer instance labels")
        x = x.astype(np.int64)
    elif not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name}: expected integer instance labels, got dtype {x.dtype}")
    if x.size and x.min() < 0:
        raise ValueError(f"{name}: instance labels must be >= 0 (0 = background), found {x.min()}")
    return x


def _relabel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relabel to consecutive 1..n. Returns (relabelled (H*W,) int64, original ids (n,), areas (n,))."""
    flat = x.ravel()
    vmax = int(flat.max()) if flat.size else 0
    if vmax <= 4 * flat.size + 1024:  # lookup table: O(N) instead of a sort
        counts = np.bincount(flat, minlength=vmax + 1)
        ids = np.flatnonzero(counts)
        ids = ids[ids > 0]
        lut = np.zeros(vmax + 1, dtype=np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return lut[flat], ids.astype(np.int64), counts[ids].astype(np.int64)
    ids, inv, counts = np.unique(flat, return_inverse=True, return_counts=True)
    inv = inv.astype(np.int64)
    if ids[0] == 0:
        return inv, ids[1:].astype(np.int64), counts[1:].astype(np.int64)
    return inv + 1, ids.astype(np.int64), counts.astype(np.int64)


@dataclass(frozen=True)
class Overlap:
    """Sparse overlap of a GT and a predicted instance label image.

    Objects are indexed 0..n-1 in increasing order of their original label id.

    Attributes:
        gt_ids: (n_gt,) original GT label ids, sorted ascending.
        pred_ids: (n_pred,) original predicted label ids, sorted ascending.
        gt_areas: (n_gt,) pixel counts of the GT objects.
        pred_areas: (n_pred,) pixel counts of the predicted objects.
        pair_gt: (k,) GT index of each overlapping pair.
        pair_pred: (k,) prediction index of each overlapping pair.
        intersections: (k,) pixel count (> 0) of each pair's intersection. Pairs with no overlap are absent.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_areas: np.ndarray
    pred_areas: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    intersections: np.ndarray

    @property
    def n_gt(self) -> int:
        return int(self.gt_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    @property
    def unions(self) -> np.ndarray:
        """(k,) union pixel count of each overlapping pair."""
        return self.gt_areas[self.pair_gt] + self.pred_areas[self.pair_pred] - self.intersections

    @property
    def ious(self) -> np.ndarray:
        """(k,) IoU in (0, 1] of each overlapping pair."""
        return self.intersections / self.unions

    def iou_matrix(self) -> np.ndarray:
        """Dense IoU matrix (n_gt, n_pred) float64 in [0, 1] (0 where objects do not overlap)."""
        out = np.zeros((self.n_gt, self.n_pred), dtype=np.float64)
        out[self.pair_gt, self.pair_pred] = self.ious
        return out

    def intersection_matrix(self) -> np.ndarray:
        """Dense intersection pixel counts (n_gt, n_pred) int64."""
        out = np.zeros((self.n_gt, self.n_pred), dtype=np.int64)
        out[self.pair_gt, self.pair_pred] = self.intersections
        return out


def overlap(gt: Any, pred: Any) -> Overlap:
    """Sparse overlap counts of two instance label images.

    Args:
        gt: GT instance labels (H, W) integer, 0 = background; ids need not be consecutive.
        pred: predicted instance labels (H, W), same shape.

    Returns:
        :class:`Overlap` with areas, overlapping pairs and their intersections.

    Raises:
        ValueError: shapes differ (or see :func:`as_label_image`).
    """
    g = as_label_image(gt, "gt")
    p = as_label_image(pred, "pred")
    if g.shape != p.shape:
        raise ValueError(f"gt and pred must have the same shape (H, W), got {g.shape} and {p.shape}")
    g_flat, gt_ids, gt_areas = _relabel(g)
    p_flat, pred_ids, pred_areas = _relabel(p)
    n_g, n_p = gt_ids.size, pred_ids.size
    both = (g_flat > 0) & (p_flat > 0)
    codes = g_flat[both] * (n_p + 1) + p_flat[both]
    if (n_g + 1) * (n_p + 1) <= _DENSE_PAIR_LIMIT:
        counts = np.bincount(codes, minlength=(n_g + 1) * (n_p + 1))
        codes = np.flatnonzero(counts)
        counts = counts[codes]
    else:
        codes, counts = np.unique(codes, return_counts=True)
    return Overlap(
        gt_ids=gt_ids,
        pred_ids=pred_ids,
        gt_areas=gt_areas,
        pred_areas=pred_areas,
        pair_gt=(codes // (n_p + 1) - 1).astype(np.int64),
        pair_pred=(codes % (n_p + 1) - 1).astype(np.int64),
        intersections=counts.astype(np.int64),
    )


def iou_matrix(gt: Any, pred: Any) -> np.ndarray:
    """Dense IoU matrix (n_gt, n_pred) of two label images; rows/columns follow sorted label ids."""
    return overlap(gt, pred).iou_matrix()


@dataclass(frozen=True)
class Matching:
    """One-to-one matching of GT and predicted objects at an IoU threshold.

    Attributes:
        threshold: IoU threshold t in [0, 1]; a pair may match when ``IoU >= t`` (``IoU > t`` if ``strict``).
        n_gt, n_pred: number of GT / predicted objects.
        gt_index, pred_index: (m,) indices (into ``Overlap.gt_ids`` / ``pred_ids``) of the matched pairs.
        ious: (m,) IoU of each matched pair.
        gt_ids, pred_ids: (m,) original label ids of the matched pairs.
    """

    threshold: float
    n_gt: int
    n_pred: int
    gt_index: np.ndarray
    pred_index: np.ndarray
    ious: np.ndarray
    gt_ids: np.ndarray
    pred_ids: np.ndarray

    @property
    def tp(self) -> int:
        return int(self.gt_index.size)

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_gt - self.tp


def _candidates(ov: Overlap, threshold: float, strict: bool) -> np.ndarray:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"IoU threshold must be in [0, 1], got {threshold}")
    ious = ov.ious
    return np.flatnonzero(ious > threshold if strict else ious >= threshold)


def _make(ov: Overlap, threshold: float, gi: np.ndarray, pi: np.ndarray, ious: np.ndarray) -> Matching:
    order = np.argsort(gi, kind="stable")
    gi, pi, ious = gi[order].astype(np.int64), pi[order].astype(np.int64), ious[order].astype(np.float64)
    return Matching(
        threshold=float(threshold),
        n_gt=ov.n_gt,
        n_pred=ov.n_pred,
        gt_index=gi,
        pred_index=pi,
        ious=ious,
        gt_ids=ov.gt_ids[gi],
        pred_ids=ov.pred_ids[pi],
    )


def match(ov: Overlap, threshold: float = 0.5, strict: bool = False) -> Matching:
    """Optimal one-to-one matching at IoU threshold ``t``.

    Candidate pairs have ``IoU >= t`` (``IoU > t`` when ``strict``, as in panoptic quality). Among all one-to-one
    matchings of candidates, the one with the most pairs is chosen, ties broken by the largest summed IoU
    (stardist ``matching``, cost ``-(1 + IoU / (2 k))``). Each connected component of the candidate graph is solved
    by ``scipy.optimize.linear_sum_assignment``; components of one pair (always the case for ``t > 0.5``) are
    taken directly.

    Args:
        ov: overlap from :func:`overlap`.
        threshold: IoU threshold t in [0, 1]. ``t = 0`` with ``strict=False`` still needs a positive overlap.

    Returns:
        :class:`Matching` with tp / fp / fn and the matched pairs.
    """
    cand = _candidates(ov, threshold, strict)
    cg, cp, ci = ov.pair_gt[cand], ov.pair_pred[cand], ov.ious[cand]
    if cand.size == 0:
        return _make(ov, threshold, cg, cp, ci)
    deg_g = np.bincount(cg, minlength=ov.n_gt)
    deg_p = np.bincount(cp, minlength=ov.n_pred)
    simple = (deg_g[cg] == 1) & (deg_p[cp] == 1)
    out_g, out_p, out_i = [cg[simple]], [cp[simple]], [ci[simple]]
    rest = np.flatnonzero(~simple)
    if rest.size:
        rg, rp, ri = cg[rest], cp[rest], ci[rest]
        n = ov.n_gt + ov.n_pred
        graph = coo_matrix((np.ones(rest.size), (rg, ov.n_gt + rp)), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        pair_comp = comp[rg]
        order = np.argsort(pair_comp, kind="stable")
        bounds = np.flatnonzero(np.diff(pair_comp[order])) + 1
        for sel in np.split(order, bounds):
            ug, g_local = np.unique(rg[sel], return_inverse=True)
            up, p_local = np.unique(rp[sel], return_inverse=True)
            k = min(ug.size, up.size)
            cost = np.zeros((ug.size, up.size), dtype=np.float64)
            cost[g_local, p_local] = -(1.0 + ri[sel] / (2.0 * k))
            rows, cols = linear_sum_assignment(cost)
            ok = cost[rows, cols] < 0
            iou_local = np.zeros_like(cost)
            iou_local[g_local, p_local] = ri[sel]
            out_g.append(ug[rows[ok]])
            out_p.append(up[cols[ok]])
            out_i.append(iou_local[rows[ok], cols[ok]])
    return _make(ov, threshold, np.concatenate(out_g), np.concatenate(out_p), np.concatenate(out_i))


def scores_by_index(ov: Overlap, scores: Any) -> np.ndarray:
    """Per-prediction scores (n_pred,) aligned with ``ov.pred_ids``.

    Args:
        scores: a mapping ``{label id: score}``, or an array indexed by label id (``scores[label_id]``,
            length > max label id; index 0 is ignored).

    Raises:
        ValueError: a predicted label id has no score.
    """
    if isinstance(scores, dict):
        missing = [int(i) for i in ov.pred_ids if int(i) not in scores]
        if missing:
            raise ValueError(f"scores: no score for predicted label ids {missing[:10]}")
        return np.asarray([float(scores[int(i)]) for i in ov.pred_ids], dtype=np.float64)
    arr = convert_to_numpy(scores, dtype=np.float64, wrap_sequence=True)
    arr = arr.ravel()
    if ov.n_pred and arr.size <= int(ov.pred_ids.max()):
        raise ValueError(
            f"scores: array indexed by label id must have length > max predicted id {int(ov.pred_ids.max())},"
            f" got {arr.size}"
        )
    return arr[ov.pred_ids]


def match_greedy(ov: Overlap, scores: np.ndarray, threshold: float = 0.5) -> Matching:
    """Score-ranked greedy matching (COCO ``evaluateImg``, LACSS).

    Predictions are visited by descending score (stable: ties keep label id order); each takes the still
    unmatched GT object with the highest IoU ``>= t`` (ties: the GT with the larger label id, as pycocotools).

    Args:
        ov: overlap from :func:`overlap`.
        scores: (n_pred,) score per prediction index (see :func:`scores_by_index`).
        threshold: IoU threshold t in [0, 1].
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size != ov.n_pred:
        raise ValueError(f"scores must have one value per prediction ({ov.n_pred}), got {scores.size}")
    cand = _candidates(ov, threshold, False)
    cg, cp, ci = ov.pair_gt[cand], ov.pair_pred[cand], ov.ious[cand]
    # group candidates by prediction; within a prediction best IoU first (ties: larger GT index first)
    order = np.lexsort((-cg, -ci, cp))
    cg, cp, ci = cg[order], cp[order], ci[order]
    starts = np.searchsorted(cp, np.arange(ov.n_pred + 1))
    gt_used = np.zeros(ov.n_gt, dtype=bool)
    out_g: list[int] = []
    out_p: list[int] = []
    out_i: list[float] = []
    for p in np.argsort(-scores, kind="stable"):
        for j in range(starts[p], starts[p + 1]):
            g = cg[j]
            if not gt_used[g]:
                gt_used[g] = True
                out_g.append(int(g))
                out_p.append(int(p))
                out_i.append(float(ci[j]))
                break
    return _make(ov, threshold, np.asarray(out_g, np.int64), np.asarray(out_p, np.int64), np.asarray(out_i))


def match_labels(gt: Any, pred: Any, threshold: float = 0.5) -> Matching:
    """Shortcut: :func:`match` of :func:`overlap` ``(gt, pred)``."""
    return match(overlap(gt, pred), threshold)


class ImageMatches:
    """The overlap of one image pair plus its matchings, computed once and cached per threshold.

    Every instance metric is a function of a list of these (one per image): one element gives the per-image
    value, all images of a dataset give the pooled value.

    Args:
        ov: overlap of the image pair.
        scores: optional (n_pred,) score per prediction index (for score-ranked metrics).
    """

    def __init__(self, ov: Overlap, scores: np.ndarray | None = None) -> None:
        self.overlap = ov
        self.scores = None if scores is None else np.asarray(scores, dtype=np.float64).ravel()
        if self.scores is not None and self.scores.size != ov.n_pred:
            raise ValueError(f"scores must have one value per prediction ({ov.n_pred}), got {self.scores.size}")
        self._optimal: dict[tuple[float, bool], Matching] = {}
        self._greedy: dict[float, Matching] = {}

    @classmethod
    def from_labels(cls, gt: Any, pred: Any, scores: Any = None) -> ImageMatches:
        """Build from label images (H, W); ``scores`` as in :func:`scores_by_index` (dict or array by label id)."""
        ov = overlap(gt, pred)
        return cls(ov, None if scores is None else scores_by_index(ov, scores))

    def matching(self, threshold: float, strict: bool = False) -> Matching:
        """Optimal matching (:func:`match`) at ``threshold``, cached."""
        key = (float(threshold), bool(strict))
        if key not in self._optimal:
            self._optimal[key] = match(self.overlap, threshold, strict)
        return self._optimal[key]

    def greedy(self, threshold: float) -> Matching:
        """Score-ranked greedy matching (:func:`match_greedy`) at ``threshold``, cached; needs scores."""
        if self.scores is None:
            raise ValueError("score-ranked metrics need per-instance scores; pass scores for the predictions")
        key = float(threshold)
        if key not in self._greedy:
            self._greedy[key] = match_greedy(self.overlap, self.scores, threshold)
        return self._greedy[key]
