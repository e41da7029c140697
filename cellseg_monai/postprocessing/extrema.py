"""h-maxima and per-object peaks of a map, computed for all objects at once on a canvas of their boxes.

:func:`skimage.morphology.h_maxima` reconstructs the whole image (a sort of every pixel), ~0.7 s per megapixel
here, although on a distance transform only the objects matter. :func:`h_maxima_of_objects` returns exactly the
same mask for such a map by reconstructing each 8-connected object inside its bounding box:

Reconstruction by dilation of ``f - h`` under ``f`` gives a pixel the largest value, over paths reaching it, of the
marker at the path's start capped by the smallest ``f`` on the path. A path that leaves an object crosses a zero of
``f``, so everything an object receives from outside it is the value ``g`` the background itself reconstructs to,
and when the background is one 8-connected region that value is the same everywhere:
``g = min(0, max(-h, max(f - h)))`` (up to skimage's float resolution term). Each object is therefore reconstructed
in its box with the pixels outside it set to ``f = 0`` and marker ``g``. A map whose background is split into
several regions (an object ring enclosing background), or that has negative values or no background, goes to
skimage as a whole.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima, reconstruction

__all__ = ["h_maxima_of_objects", "peak_local_max_of_labels"]

_EIGHT = np.ones((3, 3), dtype=bool)


def _shifted(image: np.ndarray, h: float) -> np.ndarray:
    """skimage's marker for a float image: ``image - h`` minus twice the float resolution of each value."""
    return image - h - 2 * np.finfo(image.dtype).resolution * np.abs(image)


class _Canvas:
    """The boxes of the objects of ``labels`` (ids 1..N) placed on shelves ``gap`` px apart in one canvas."""

    def __init__(
        self, labels: np.ndarray, gap: int, boxes: list[tuple[int, tuple[slice, slice]]] | None = None
    ) -> None:
        self.labels = labels
        self.boxes = _boxes(labels) if boxes is None else boxes
        sizes = [(b[0].stop - b[0].start, b[1].stop - b[1].start) for _, b in self.boxes]
        places, self.shape = _shelf_pack(sizes, gap)
        self.dst = [(slice(y, y + h), slice(x, x + w)) for (y, x), (h, w) in zip(places, sizes, strict=True)]
        self.ids = np.zeros(self.shape, dtype=np.int64)  # the object each canvas pixel belongs to, 0 between
        for (index, box), dst in zip(self.boxes, self.dst, strict=True):
            own = labels[box] == index
            self.ids[dst][own] = index

    def put(self, image: np.ndarray, fill: float) -> np.ndarray:
        """``image`` on each object's pixels, ``fill`` everywhere else."""
        canvas = np.full(self.shape, fill, dtype=image.dtype)
        for (index, box), dst in zip(self.boxes, self.dst, strict=True):
            own = self.ids[dst] == index
            canvas[dst][own] = image[box][own]
        return canvas

    def take(self, canvas: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """A boolean canvas (true only on object pixels) back in image coordinates, OR-ed into ``out`` if given."""
        out = np.zeros(self.labels.shape, dtype=bool) if out is None else out
        for (_, box), dst in zip(self.boxes, self.dst, strict=True):
            out[box] |= canvas[dst]
        return out


def _boxes(labels: np.ndarray) -> list[tuple[int, tuple[slice, slice]]]:
    """(id, bounding box) of every object of ``labels`` (ids 1..N)."""
    return [(i, box) for i, box in enumerate(ndi.find_objects(labels), start=1) if box is not None]


def _batches(
    boxes: list[tuple[int, tuple[slice, slice]]], max_pixels: int
) -> list[list[tuple[int, tuple[slice, slice]]]]:
    """``boxes`` in consecutive groups whose box areas add up to at most ``max_pixels`` (a larger box alone)."""
    groups: list[list[tuple[int, tuple[slice, slice]]]] = [[]]
    total = 0
    for index, box in boxes:
        area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
        if groups[-1] and total + area > max_pixels:
            groups.append([])
            total = 0
        groups[-1].append((index, box))
        total += area
    return groups


def h_maxima_of_objects(image: np.ndarray, h: float, batch_pixels: int = 1 << 17) -> np.ndarray:
    """``skimage.morphology.h_maxima(image, h)`` (default footprint) for a float (H, W) map ``>= 0``, object by object.

    Args:
        image: (H, W) floating-point map, background exactly 0 (e.g. a masked distance transform).
        h: the minimum dynamic of a maximum, > 0.
        batch_pixels: objects are reconstructed in canvases of at most about this many box pixels (a larger object
            alone): skimage sorts every canvas pixel, and many small sorts stay in cache where one large sort does
            not, so the time per pixel stays about flat as images grow (``benchmarks/speed.py``, 512² to 4096²).
            The result does not depend on it.

    Returns:
        (H, W) uint8, 1 on the h-maxima — equal to skimage's result (``tests/postprocessing/test_extrema.py``).
    """
    image = np.asarray(image)
    if image.ndim != 2 or not np.issubdtype(image.dtype, np.floating) or h <= 0:
        return h_maxima(image, h)
    foreground = image > 0
    if h > np.ptp(image) or not foreground.any() or image.min() < 0 or foreground.all():
        return h_maxima(image, h)
    objects, _ = ndi.label(foreground, structure=_EIGHT)
    marker = _shifted(image, h)
    g = min(0.0, max(-h, float(marker[foreground].max())))
    out = np.zeros(image.shape, dtype=bool)
    for batch in _batches(_boxes(objects), batch_pixels):
        canvas = _Canvas(objects, gap=1, boxes=batch)  # nothing but g crosses the zeros of f between the boxes
        f = canvas.put(image, 0.0)
        rec = reconstruction(canvas.put(marker, g), f, method="dilation", footprint=_EIGHT)
        canvas.take(((f - rec) >= h) & (canvas.ids > 0), out=out)
    return out.astype(np.uint8)


def peak_local_max_of_labels(image: np.ndarray, labels: np.ndarray, min_distance: int) -> np.ndarray:
    """``skimage.feature.peak_local_max(image, min_distance=min_distance, labels=labels, exclude_border=False)``
    as a set: (K, 2) peak coordinates, sorted row-major (skimage's order differs; the set is the same).

    Args:
        image: (H, W) float map.
        labels: (H, W) integer labels, 0 = background.
        min_distance: minimum Chebyshev distance between two peaks of one label, >= 1.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 2 or labels.shape != image.shape or min_distance < 1 or not labels.any():
        peaks = peak_local_max(image, min_distance=min_distance, labels=labels, exclude_border=False)
        return peaks[np.lexsort(peaks.T[::-1])] if len(peaks) else peaks
    # skimage, per label: the label's box with other pixels at the dtype's minimum, peaks = pixels equal to the
    # maximum filter (2·min_distance + 1, mode "nearest") above the whole image's minimum; a label whose every pixel
    # is such a peak has instead its isolated pixels; then greedy spacing, highest first. Boxes min_distance px
    # apart (filled with the minimum) see nothing of each other in the filter or the spacing.
    floor = np.finfo(image.dtype).min if np.issubdtype(image.dtype, np.floating) else np.iinfo(image.dtype).min
    canvas = _Canvas(labels.astype(np.int64), gap=min_distance)
    values = canvas.put(image, floor)
    inside = canvas.ids > 0
    size = 2 * min_distance + 1
    peaks = values == ndi.maximum_filter(values, size=size, mode="nearest")
    not_peak = np.bincount(canvas.ids[inside & ~peaks], minlength=canvas.ids.max() + 1)
    trivial = not_peak == 0
    trivial[0] = False
    if trivial.any():
        peaks &= ~trivial[canvas.ids]
        isolated = inside & ~ndi.binary_opening(inside) & trivial[canvas.ids]
        peaks |= isolated
    peaks &= inside & (values > image.min())
    # skimage's own spacing pass (highest first, stable, greedy): given only these candidates (a 1-pixel footprint
    # keeps every candidate above the floor), it runs once for all labels
    candidates = np.where(peaks, values, floor)
    kept = peak_local_max(
        candidates,
        min_distance=min_distance,
        threshold_abs=floor,
        footprint=np.ones((1, 1), bool),
        exclude_border=False,
    )
    out = np.zeros(canvas.shape, dtype=bool)
    out[tuple(np.asarray(kept, dtype=np.int64).T)] = True
    return np.transpose(np.nonzero(canvas.take(out)))


def _shelf_pack(sizes: list[tuple[int, int]], gap: int = 1) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Top-left corners of boxes of ``sizes`` (h, w) placed on shelves ``gap`` px apart (and from the canvas edge),
    tallest first, and the canvas shape."""
    if not sizes:
        return [], (1, 1)
    area = sum((h + gap) * (w + gap) for h, w in sizes)
    width = max(max(w for _, w in sizes) + 2 * gap, int(np.sqrt(area) * 1.2))
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i][0])
    places: list[tuple[int, int]] = [(0, 0)] * len(sizes)
    y, x, shelf = gap, gap, 0
    for i in order:
        h, w = sizes[i]
        if x + w + gap > width:
            y, x, shelf = y + shelf + gap, gap, 0
        places[i] = (y, x)
        x += w + gap
        shelf = max(shelf, h)
    return places, (y + shelf + gap, width)
