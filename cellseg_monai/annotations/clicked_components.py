"""Which foreground components a set of clicks vouches for, and clicks for the cells a training crop cut off.

LACSS learns from one click per cell and a foreground mask (:mod:`cellseg_monai.annotations.points`). Both are made on
the whole image; training then crops patches. A cell that the crop's border cuts through keeps its visible part in the
crop's mask but loses its click when the click lies outside the crop, so the location network is taught that the cut
part is background (no click there) and the mask loss that it belongs to a clicked neighbour. On a whole image the
same thing happens at the image border, where the truth counts every visible fragment as a cell (its click is the
visible part's centroid): a network trained on crops learns to miss the cells that the image border cuts.
:func:`cut_off_points` gives every such fragment the click a user would make on it: the centroid of its visible part.

Components are 8-connected components of the mask (the convention of :func:`unclicked_components`, which the LACSS
partial-clicks loss uses to leave unclicked foreground out).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cellseg_monai.postprocessing.instances import labels_on_border

__all__ = ["cut_off_points", "unclicked_components"]

_EIGHT = np.ones((3, 3), bool)


def unclicked_components(fg: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected components of ``fg`` and the ids of those that hold none of ``points``.

    A point on a background pixel (a jittered click, the centroid of a non-convex cell) vouches for the component of
    the nearest foreground pixel; points rounded outside the array are ignored.

    Args:
        fg: (H, W) mask, > 0 = foreground.
        points: (K, 2) (y, x) pixel coordinates.

    Returns:
        ``(components, ids)``: (H, W) int32 component labels (0 = background) and the sorted unclicked ids.
    """
    mask = np.asarray(fg) > 0
    comp, n = ndi.label(mask, structure=_EIGHT)
    if n == 0:
        return comp.astype(np.int32), np.zeros(0, np.int64)
    rc = np.round(np.asarray(points, np.float64).reshape(-1, 2)).astype(np.int64)
    rc = rc[(rc[:, 0] >= 0) & (rc[:, 0] < mask.shape[0]) & (rc[:, 1] >= 0) & (rc[:, 1] < mask.shape[1])]
    if len(rc) and not mask[rc[:, 0], rc[:, 1]].all():
        _, (ny, nx) = ndi.distance_transform_edt(~mask, return_indices=True)  # nearest foreground pixel
        rc = np.stack([ny[rc[:, 0], rc[:, 1]], nx[rc[:, 0], rc[:, 1]]], axis=1)
    clicked = np.unique(comp[rc[:, 0], rc[:, 1]]) if len(rc) else np.zeros(0, np.int64)
    ids = np.setdiff1d(np.arange(1, n + 1), clicked)
    return comp.astype(np.int32), ids.astype(np.int64)


def cut_off_points(fg: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A click for every foreground component that touches the border of ``fg`` and holds no point.

    Meant for a crop of a fully clicked image (every cell has a click): such a component is the visible part of a
    cell whose click the crop left outside. Its new click is the centroid of the visible part, or the component pixel
    nearest to it when the centroid falls outside the component (a curved fragment). Components inside the crop
    without a click are left alone (debris in a thresholded mask is not a cell), and so is a fragment that shares its
    component with a clicked cell (the mask does not say where one ends).

    Args:
        fg: (H, W) mask of the crop, > 0 = foreground.
        points: (K, 2) (y, x) pixel coordinates of the crop's clicks.

    Returns:
        (M, 2) float64 (y, x) new clicks, in increasing component order (row-major first pixel).
    """
    comp, ids = unclicked_components(fg, points)
    if len(ids) == 0:
        return np.zeros((0, 2), np.float64)
    ids = np.intersect1d(ids, labels_on_border(comp))
    out = np.zeros((len(ids), 2), np.float64)
    for k, cid in enumerate(ids):
        rr, cc = np.nonzero(comp == cid)
        cy, cx = rr.mean(), cc.mean()
        if comp[int(round(cy)), int(round(cx))] != cid:
            j = int(np.argmin((rr - cy) ** 2 + (cc - cx) ** 2))
            cy, cx = float(rr[j]), float(cc[j])
        out[k] = (cy, cx)
    return out
