"""Scribble annotations: simulate them from full instance labels (ImPartial protocol) or read user-made ones.

A scribble image is (H, W) integer: 0 unlabelled, 1 background, 2.. foreground classes (class index = value - 1).

Simulation follows the protocol of ImPartial (Martinez, Ghose, ... & Nadeem, "ImPartial: Partial Annotations for Cell
Instance Segmentation", bioRxiv 2021, Sec. 3 "Scribble generation"; reference code ``get_scribbles_mask`` in
github.com/natalialmg/ImPartial): repeatedly pick a random pixel of a not yet annotated object, open a ``fov`` × ``fov``
field of view around it, and annotate every object it touches with the skeleton of the object (foreground scribble)
and the background of the field of view and of a ring of radius 4 around those objects with its skeleton
(background scribble), until ``budget`` objects are annotated. Differences from the reference code: the budget is
never exceeded (objects in the last field of view beyond the budget are left out, the picked one first), touching
objects get one skeleton each (not a skeleton of their union), and the random state is seeded from a stable hash of
``(sample_id, seed, budget)`` so the annotation of an image is identical in every process and epoch.

One option goes beyond the paper: ``separate_touching`` also draws, as background, the line where an annotated object
touches another object (its pixels on both sides of the seam). The paper's background strokes cover background
pixels only, so two touching nuclei never get a stroke between them. Off by default (the paper's protocol): trained
with it, ImPartial scored lower on BBBC038 (``benchmarks/results/impartial-seams``).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import disk, skeletonize
from skimage.segmentation import relabel_sequential

from cellseg_monai.data.io import DataError, read_image, validate_labels

__all__ = [
    "BACKGROUND",
    "UNLABELLED",
    "budget_count",
    "read_scribbles",
    "scribble_seed",
    "simulate_scribbles",
    "touching_seams",
    "validate_scribbles",
]

UNLABELLED = 0
"""Scribble value of pixels without annotation."""
BACKGROUND = 1
"""Scribble value of background strokes; foreground class c (>= 1) has value c + 1."""

_RING_RADIUS = 4  # background ring around annotated objects (ImPartial code: dilation by disk(4))
_CONTOUR_EROSION = 3  # eroded-contour stroke for cytoplasm-like classes (ImPartial code: erosion by disk(3))


def budget_count(budget: int | float, n_instances: int) -> int:
    """Number of objects to annotate.

    Args:
        budget: an int >= 0 (number of objects) or a float in (0, 1] (fraction of the image's objects, rounded up,
            at least 1 when the image has an object).
        n_instances: number of objects in the image.

    Returns:
        ``min(budget, n_instances)`` for an int; ``max(1, ceil(budget * n_instances))`` for a fraction (0 without
        objects).
    """
    if isinstance(budget, (bool, np.bool_)):
        raise TypeError("budget must be an int (objects) or a float in (0, 1] (fraction), not a bool")
    if isinstance(budget, (int, np.integer)):
        if budget < 0:
            raise ValueError(f"budget must be >= 0 objects, got {budget}")
        return int(min(int(budget), n_instances))
    if isinstance(budget, (float, np.floating)):
        if not 0.0 < float(budget) <= 1.0:
            raise ValueError(f"a float budget is a fraction of the objects in (0, 1], got {budget}")
        if n_instances == 0:
            return 0
        return int(min(n_instances, max(1, math.ceil(float(budget) * n_instances - 1e-9))))
    raise TypeError(f"budget must be an int or a float, got {type(budget).__name__}")


def scribble_seed(sample_id: str, seed: int, budget: int | float) -> int:
    """Stable 64-bit seed from ``(sample_id, seed, budget)`` (SHA-256; independent of ``PYTHONHASHSEED``)."""
    b = repr(float(budget)) if isinstance(budget, (float, np.floating)) else str(int(budget))
    digest = hashlib.sha256(f"{sample_id}\x1f{int(seed)}\x1f{b}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _object_stroke(obj: np.ndarray, contour: bool) -> np.ndarray:
    """Foreground stroke of one object mask (local window): its skeleton (+ eroded contour), never empty."""
    padded = np.pad(obj, _CONTOUR_EROSION + 1)  # the bounding-box window touches the object: pad with background
    stroke = skeletonize(padded)
    if contour:
        inner = ndimage.binary_erosion(padded, disk(_CONTOUR_EROSION))
        stroke |= inner & ~ndimage.binary_erosion(inner, disk(1))
    crop = slice(_CONTOUR_EROSION + 1, -(_CONTOUR_EROSION + 1))
    stroke = stroke[crop, crop] & obj
    if not stroke.any():  # tiny object: the object pixel nearest to its centroid
        ys, xs = np.nonzero(obj)
        k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        stroke[ys[k], xs[k]] = True
    return stroke


def touching_seams(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of an object that are 4-adjacent to a different object.

    Args:
        labels: (H, W) integer instance labels, 0 = background.

    Returns:
        ``(index, own, other)``: flat pixel indices (a pixel once per neighbouring object), the object id at the
        pixel and the id of the object it touches. A seam between objects a and b appears from both sides: the
        pixels of a next to b (own a, other b) and those of b next to a (own b, other a).
    """
    lab = np.asarray(labels)
    flat = np.arange(lab.size, dtype=np.int64).reshape(lab.shape)
    index, own, other = [], [], []
    for axis in (0, 1):
        a = lab.take(range(lab.shape[axis] - 1), axis=axis)
        b = lab.take(range(1, lab.shape[axis]), axis=axis)
        fa = flat.take(range(lab.shape[axis] - 1), axis=axis)
        fb = flat.take(range(1, lab.shape[axis]), axis=axis)
        seam = (a != b) & (a > 0) & (b > 0)
        index += [fa[seam], fb[seam]]
        own += [a[seam], b[seam]]
        other += [b[seam], a[seam]]
    return (
        np.concatenate(index).astype(np.int64),
        np.concatenate(own).astype(np.int64),
        np.concatenate(other).astype(np.int64),
    )


def simulate_scribbles(
    labels: np.ndarray,
    sample_id: str,
    seed: int = 0,
    budget: int | float = 0.3,
    fov: int = 32,
    class_map: Mapping[int, int] | None = None,
    contour_classes: Sequence[int] = (),
    separate_touching: bool = False,
) -> np.ndarray:
    """Simulate scribbles from full instance labels (ImPartial protocol, see the module docstring).

    Args:
        labels: (H, W) (or (1, H, W)) integer instance labels, 0 = background.
        sample_id: image id; with ``seed`` and ``budget`` it fixes the random state.
        seed: user seed.
        budget: objects to annotate: an int, or a float in (0, 1] = fraction of the objects (see :func:`budget_count`).
        fov: side of the square field of view in pixels (ImPartial: 32).
        class_map: object id → foreground class (>= 1); default every object is class 1 (scribble value 2).
        contour_classes: classes whose objects also get the eroded contour (a ring 3 px inside the border),
            as ImPartial does for cytoplasm-like classes.
        separate_touching: also mark as background the seam where an annotated object touches another object
            (the pixels on both sides, 4-adjacency; see :func:`touching_seams`); foreground strokes keep their
            pixels. Not part of the paper's protocol (module docstring).

    Returns:
        (H, W) ``uint8`` scribbles: 0 unlabelled, 1 background, c + 1 for class c. An image without objects gets
        background strokes only (one field of view, or ``budget`` of them for an int budget).
    """
    lab = np.asarray(labels)
    if lab.ndim == 3 and lab.shape[0] == 1:
        lab = lab[0]
    lab = validate_labels(lab, f"labels of {sample_id!r}")
    if int(fov) < 1:
        raise ValueError(f"fov must be >= 1 pixel, got {fov}")
    fov = int(fov)
    rel, _, inverse = relabel_sequential(lab)
    n = int(rel.max())
    classes = np.ones(n + 1, dtype=np.int64)
    if class_map:
        for j in range(1, n + 1):
            classes[j] = int(class_map.get(int(inverse[j]), 1))
        if classes[1:].min() < 1 or classes.max() > 254:
            raise ValueError("class_map values must be foreground classes in 1..254 (scribble value = class + 1)")
    contour = np.isin(classes, np.asarray(list(contour_classes), dtype=np.int64))
    k = budget_count(budget, n)
    rng = np.random.default_rng(scribble_seed(sample_id, seed, budget))
    h, w = rel.shape
    fg = rel > 0
    out = np.zeros((h, w), dtype=np.uint8)
    slices = ndimage.find_objects(rel)
    areas = np.bincount(rel.ravel(), minlength=n + 1).astype(np.float64)
    areas[0] = 0.0
    pad = _RING_RADIUS + 1

    def box_at(y: int, x: int) -> tuple[int, int, int, int]:
        y0 = min(max(0, y - fov // 2), max(0, h - fov))
        x0 = min(max(0, x - fov // 2), max(0, w - fov))
        return y0, x0, min(h, y0 + fov), min(w, x0 + fov)

    def background_stroke(box: tuple[int, int, int, int], objs: list[int]) -> None:
        y0, x0, y1, x1 = box
        for j in objs:
            sy, sx = slices[j - 1]
            y0, x0 = min(y0, max(0, sy.start - pad)), min(x0, max(0, sx.start - pad))
            y1, x1 = max(y1, min(h, sy.stop + pad)), max(x1, min(w, sx.stop + pad))
        region = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        region[box[0] - y0 : box[2] - y0, box[1] - x0 : box[3] - x0] = True
        if objs:
            ring = ndimage.binary_dilation(np.isin(rel[y0:y1, x0:x1], objs), disk(_RING_RADIUS))
            region |= ring
        region &= ~fg[y0:y1, x0:x1]
        if region.any():
            out[y0:y1, x0:x1][skeletonize(region)] = BACKGROUND

    if n == 0:
        n_boxes = max(1, int(budget)) if isinstance(budget, (int, np.integer)) else 1
        for _ in range(n_boxes):
            background_stroke(box_at(int(rng.integers(h)), int(rng.integers(w))), [])
        return out

    remaining = areas.copy()
    spent = 0
    while spent < k:
        j = int(rng.choice(n + 1, p=remaining / remaining.sum()))
        sy, sx = slices[j - 1]
        ys, xs = np.nonzero(rel[sy, sx] == j)
        p = int(rng.integers(len(ys)))
        box = box_at(int(ys[p]) + sy.start, int(xs[p]) + sx.start)
        in_box = np.unique(rel[box[0] : box[2], box[1] : box[3]])
        others = [int(i) for i in in_box if i != 0 and i != j and remaining[i] > 0]
        others = [others[i] for i in rng.permutation(len(others))]
        objs = ([j] + others)[: k - spent]
        for i in objs:
            sy, sx = slices[i - 1]
            stroke = _object_stroke(rel[sy, sx] == i, bool(contour[i]))
            out[sy, sx][stroke] = classes[i] + 1
            remaining[i] = 0.0
        background_stroke(box, objs)
        spent += len(objs)
    if separate_touching:
        index, own, other = touching_seams(rel)
        annotated = remaining == 0.0
        annotated[0] = False
        seam = index[annotated[own] | annotated[other]]
        flat = out.reshape(-1)
        flat[seam[flat[seam] == UNLABELLED]] = BACKGROUND
    return out


def validate_scribbles(scribbles: np.ndarray, source: str | os.PathLike = "<array>") -> np.ndarray:
    """Check a scribble image: (H, W) integers, 0 unlabelled, 1 background, 2..255 foreground classes.

    Returns:
        (H, W) ``int32`` array.

    Raises:
        DataError: naming ``source`` and the problem (colour drawing, 3D, non-integral, negative, out of range).
    """
    arr = np.asarray(scribbles)
    if (
        arr.ndim == 3
        and arr.shape[-1] in (3, 4)
        and not all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, 3))
    ):
        raise DataError(
            f"{source}: scribble image has colour channels {arr.shape}; expected one channel of class values "
            "(0 unlabelled, 1 background, 2.. foreground classes), not a colour drawing"
        )
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    try:
        out = validate_labels(arr, source)
    except DataError as exc:
        raise DataError(f"{exc} (scribbles: 0 unlabelled, 1 background, 2.. foreground classes)") from exc
    values = np.unique(out)
    if values.max() > 255:
        raise DataError(f"{source}: scribble value {values.max()} is out of range; expected 0, 1 and 2..255")
    if values.max() == 255 and set(values.tolist()) <= {0, 255}:
        raise DataError(
            f"{source}: scribble image holds only 0 and 255 (a binary mask?); expected 0 unlabelled, 1 background, "
            "2.. foreground classes"
        )
    return out.astype(np.int32)


def read_scribbles(path: str | os.PathLike) -> np.ndarray:
    """Read a user-made scribble image (TIFF/PNG) and validate it with :func:`validate_scribbles`.

    Returns:
        (H, W) ``int32`` scribbles: 0 unlabelled, 1 background, 2.. foreground classes.
    """
    return validate_scribbles(read_image(path), path)
