"""Per-object measurements of an instance label image (the CSV that inference writes beside each label TIFF)."""

from __future__ import annotations

import numpy as np

__all__ = ["MEASUREMENT_COLUMNS", "measure_instances"]

#: Column order of the rows returned by :func:`measure_instances` (and of the inference CSV).
MEASUREMENT_COLUMNS: tuple[str, ...] = ("id", "area", "centroid_y", "centroid_x", "mean_intensity", "score")


def _spatial(array: np.ndarray | None, name: str, shape: tuple[int, int], allow_channels: bool) -> np.ndarray | None:
    if array is None:
        return None
    array = np.asarray(array)
    if allow_channels and array.ndim == 3:
        if array.shape[0] == 0:
            raise ValueError(f"{name} has no channels: shape {tuple(array.shape)}.")
        array = array.mean(axis=0, dtype=np.float64)  # accumulates in float64 without a float64 copy of C channels
    if array.ndim != 2:
        expected = "(H, W) or (C, H, W)" if allow_channels else "(H, W)"
        raise ValueError(f"{name} must be {expected}, got shape {tuple(np.asarray(array).shape)}.")
    if array.shape != shape:
        raise ValueError(f"{name} has height x width {array.shape}, but the labels have {shape}.")
    return array  # np.bincount reads its weights as float64 itself


def measure_instances(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    prob: np.ndarray | None = None,
) -> list[dict[str, int | float]]:
    """One row of measurements per object of an instance label image.

    Args:
        labels: (H, W) integer instance labels, 0 = background (ids need not be consecutive).
        image: (H, W) or channel-first (C, H, W) intensities, any range, or None.
        prob: (H, W) foreground probability in [0, 1], or None.

    Returns:
        Rows sorted by id, each ``{"id": int, "area": int (px), "centroid_y": float, "centroid_x": float (px, row
        and column of the centre of mass), "mean_intensity": float, "score": float}`` where ``mean_intensity`` is
        the mean over the object's pixels of the channel-mean intensity (NaN when ``image`` is None) and ``score``
        is the mean of ``prob`` over the object's pixels — or 1.0 when ``prob`` is None: a hard segmentation gives
        every object full confidence, which keeps score-ranked metrics (``ap@t``) defined and ranks objects equally.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2D (H, W) array, got shape {tuple(labels.shape)}.")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.number):
        raise TypeError(f"labels must hold integer instance ids, got dtype {labels.dtype}.")
    if not np.issubdtype(labels.dtype, np.integer) and not np.array_equal(labels, np.round(labels)):
        raise ValueError("labels must hold integer instance ids, got non-integer (or NaN) values.")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative (0 = background).")
    labels = labels.astype(np.int64)
    shape = labels.shape
    grey = _spatial(image, "image", shape, allow_channels=True)
    prob = _spatial(prob, "prob", shape, allow_channels=False)

    if not labels.any():
        return []
    # one pass of np.bincount per column (no per-object Python work): 5000 objects cost what 10 do
    flat = labels.ravel()
    area = np.bincount(flat)
    ids = np.flatnonzero(area)
    ids = ids[ids > 0]
    count = area[ids].astype(np.float64)
    rows, cols = np.indices(shape)

    def mean_of(values: np.ndarray) -> np.ndarray:
        return np.bincount(flat, weights=values.ravel(), minlength=len(area))[ids] / count

    centroid_y, centroid_x = mean_of(rows), mean_of(cols)
    mean_intensity = mean_of(grey) if grey is not None else np.full(len(ids), np.nan)
    score = mean_of(prob) if prob is not None else np.ones(len(ids))
    return [
        {
            "id": int(ids[i]),
            "area": int(area[ids[i]]),
            "centroid_y": float(centroid_y[i]),
            "centroid_x": float(centroid_x[i]),
            "mean_intensity": float(mean_intensity[i]),
            "score": float(score[i]),
        }
        for i in range(len(ids))
    ]
