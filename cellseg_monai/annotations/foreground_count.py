"""Foreground-mask + count annotations: simulate them from full instance labels or read user-made ones.

The weak label of the canonical-shape method (Costa, Gaudio, Campilho & Cardoso, "Explainable Weakly-Supervised
Cell Nuclei Segmentation by Canonical Shape Learning and Transformation", MIDL 2022, Sec. 2.3-2.4) is the binary
foreground mask of a patch and its number of nuclei K. Simulated from full labels, K is the number of instances
with at least one pixel in the patch (a nucleus cut by the patch border counts).

User-made annotations live beside the images (data contract, ``docs/architecture.md``)::

    <dataset>/weak/masks/<id>.tif     (H, W) foreground mask, any dtype, > 0 = foreground (any image suffix)
    <dataset>/weak/counts.json        {"<id>": K, ...}, K a non-negative integer (nuclei in the whole image)

Only the whole image's count is known for user-made labels, so a random crop of such an image has no exact K;
crops need simulated labels (full labels) or a count per crop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.utils import convert_to_numpy

from cellseg_monai.data.io import IMAGE_SUFFIXES, DataError, read_image, validate_labels

__all__ = [
    "count_instances",
    "find_weak_mask",
    "read_counts",
    "read_foreground_count",
    "read_foreground_mask",
    "simulate_foreground_count",
]


def _crop(arr: np.ndarray, crop_box: Sequence[int] | None) -> np.ndarray:
    if crop_box is None:
        return arr
    if len(crop_box) != 4:
        raise ValueError(f"crop_box must be (row_start, col_start, row_stop, col_stop); got {crop_box!r}.")
    r0, c0, r1, c1 = (int(v) for v in crop_box)
    h, w = arr.shape
    if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
        raise ValueError(f"crop_box {tuple(crop_box)} is empty or outside the ({h}, {w}) label image.")
    return arr[r0:r1, c0:c1]


def count_instances(labels: np.ndarray) -> int:
    """Number of distinct non-zero ids in an (H, W) (or (1, H, W)) instance label image."""
    arr = np.asarray(labels)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    ids = np.unique(validate_labels(arr))
    return int((ids != 0).sum())


def simulate_foreground_count(labels: np.ndarray, crop_box: Sequence[int] | None = None) -> tuple[np.ndarray, int]:
    """Weak label (foreground mask, count) of a patch from full instance labels.

    Args:
        labels: (H, W) or (1, H, W) instance labels (numpy or torch), 0 = background.
        crop_box: optional patch (row_start, col_start, row_stop, col_stop), half-open; default the whole image.

    Returns:
        ``(mask, count)``: (h, w) ``uint8`` mask (1 = foreground) of the patch, and the number of instances with at
        least one pixel in the patch.

    Raises:
        DataError: labels violate the contract (see :func:`cellseg_monai.data.io.validate_labels`).
        ValueError: a malformed or out-of-bounds ``crop_box``.
    """
    arr = convert_to_numpy(labels, wrap_sequence=True)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    patch = _crop(validate_labels(arr), crop_box)
    return (patch > 0).astype(np.uint8), count_instances(patch)


def read_foreground_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a user-made foreground mask: any 2D image file, > 0 = foreground (all channels of an RGB(A) file).

    Returns:
        (H, W) ``uint8`` mask in {0, 1}.

    Raises:
        DataError: naming the file (missing, unreadable, not 2D, NaN values).
    """
    arr = read_image(path)
    if arr.ndim == 3:
        arr = arr[..., : min(arr.shape[-1], 3)].max(axis=-1)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise DataError(f"{path}: foreground mask contains NaN or infinite values")
    return (arr > 0).astype(np.uint8)


def read_counts(path: str | os.PathLike) -> dict[str, int]:
    """Read ``counts.json``: a JSON object mapping image id → number of nuclei (non-negative integer).

    Raises:
        DataError: naming the file (missing, invalid JSON, not an object, a count that is not a non-negative
            integer).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: counts file does not exist")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: counts file is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f'{p}: counts file must hold a JSON object {{"<id>": count, ...}}; got {type(data).__name__}')
    out: dict[str, int] = {}
    for key, value in data.items():
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok or (isinstance(value, float) and value.is_integer())
        if not ok or value < 0:
            raise DataError(f"{p}: count of {key!r} must be a non-negative integer; got {value!r}")
        out[str(key)] = int(value)
    return out


def find_weak_mask(dataset_dir: str | os.PathLike, image_id: str) -> Path:
    """Path of ``<dataset_dir>/weak/masks/<image_id>.<suffix>`` (suffixes of ``IMAGE_SUFFIXES``, ``.tif`` first).

    Raises:
        DataError: naming the expected file when none exists.
    """
    folder = Path(dataset_dir) / "weak" / "masks"
    for suffix in IMAGE_SUFFIXES:
        for cand in (folder / f"{image_id}{suffix}", folder / f"{image_id}{suffix.upper()}"):
            if cand.is_file():
                return cand
    raise DataError(f"{folder / (image_id + '.tif')}: foreground mask does not exist (looked for {image_id}.* there)")


def read_foreground_count(dataset_dir: str | os.PathLike, image_id: str) -> tuple[np.ndarray, int]:
    """User-made weak label of one image: (``weak/masks/<id>.*`` mask, ``weak/counts.json`` count).

    Returns:
        ``(mask, count)``: (H, W) ``uint8`` mask in {0, 1} and the number of nuclei.

    Raises:
        DataError: naming the file: a missing mask or counts file, an id missing from counts.json, a bad value, or
            a count > 0 with an empty mask (or 0 with a non-empty mask).
    """
    mask_path = find_weak_mask(dataset_dir, image_id)
    counts_path = Path(dataset_dir) / "weak" / "counts.json"
    counts = read_counts(counts_path)
    if image_id not in counts:
        raise DataError(f"{counts_path}: no count for image id {image_id!r}")
    mask, count = read_foreground_mask(mask_path), counts[image_id]
    if (count > 0) != bool(mask.any()):
        raise DataError(
            f"{mask_path}: foreground mask has {int(mask.sum())} foreground pixels but {counts_path} gives "
            f"{count} nuclei for {image_id!r}"
        )
    return mask, count
