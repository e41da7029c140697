"""Partially labelled exemplars (Feng et al.): keep a seeded fraction of the instances of each training image.

Real partial labels are simply label images with some nuclei missing; simulated ones are made from full labels by
:func:`keep_fraction`, a deterministic function of (image id, seed, fraction) so that the same nuclei are kept in
every epoch (redrawing them would leak the full labels over the epochs).
"""

from __future__ import annotations

import numpy as np

from cellseg_monai.annotations.scribbles import budget_count, scribble_seed

__all__ = ["keep_fraction", "kept_ids"]


def kept_ids(labels: np.ndarray, image_id: str, seed: int = 0, fraction: float = 0.25) -> np.ndarray:
    """Ids of the instances kept for ``image_id``.

    Args:
        labels: (H, W) (or any shape) integer instance labels, 0 = background.
        image_id: the image's id (file stem); part of the random seed.
        seed: user seed.
        fraction: fraction of the instances to keep, in (0, 1]; 1.0 keeps all.

    Returns:
        Sorted int64 array of the kept ids. The count is ``ceil(fraction · n)`` (n = number of instances; a tiny
        tolerance absorbs float error, so 0.25 of 8 keeps exactly 2), at least 1 when the image has an instance,
        0 without instances (:func:`cellseg_monai.annotations.scribbles.budget_count`). Which ids are kept is drawn
        without replacement by a generator seeded with SHA-256 of (image id, seed, fraction), so it is the same on
        every machine and in every epoch.

    Raises:
        ValueError: ``fraction`` outside (0, 1], or labels with negative values.
        TypeError: ``fraction`` that is not a real number (bools are refused).
    """
    if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, (int, float, np.integer, np.floating)):
        raise TypeError(f"fraction must be a float in (0, 1], got {type(fraction).__name__}")
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer) and not np.all(np.mod(arr, 1) == 0):
        raise ValueError("labels must be integer instance ids")
    if arr.size and arr.min() < 0:
        raise ValueError("labels must be >= 0 (0 = background)")
    ids = np.unique(arr.astype(np.int64))
    ids = ids[ids > 0]
    n_keep = budget_count(fraction, int(ids.size))
    if n_keep >= ids.size:
        return ids
    rng = np.random.default_rng(scribble_seed(str(image_id), seed, fraction))
    return np.sort(rng.choice(ids, size=n_keep, replace=False))


def keep_fraction(labels: np.ndarray, image_id: str, seed: int = 0, fraction: float = 0.25) -> np.ndarray:
    """Partial labels: ``labels`` with only the instances of :func:`kept_ids` (the others set to 0).

    Args:
        labels: (H, W) integer instance labels, 0 = background.
        image_id, seed, fraction: see :func:`kept_ids`.

    Returns:
        Array of the same shape and dtype as ``labels``; kept instances keep their ids.
    """
    arr = np.asarray(labels)
    keep = kept_ids(arr, image_id, seed=seed, fraction=fraction)
    return np.where(np.isin(arr, keep), arr, 0).astype(arr.dtype, copy=False)
