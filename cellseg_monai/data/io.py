"""Readers and writers for 2D microscopy images and instance label images.

Every problem with a file raises :class:`DataError` (a ``ValueError``) whose message names the file and the problem,
so a user with a bad dataset sees one clear line instead of a deep stack trace.

Formats: TIFF through ``tifffile``; PNG, JPEG, BMP and the rest through ``imageio``. Labels are either a label image
(H, W) with 0 = background and 1..N one id per object, or a DSB2018 ``masks/`` directory with one binary mask file
per object (Kaggle Data Science Bowl 2018 / BBBC038, Caicedo et al., Nature Methods 2019).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "OverwriteError",
    "IMAGE_SUFFIXES",
    "atomic_path",
    "is_image_file",
    "read_image",
    "read_labels",
    "validate_labels",
    "write_labels",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif")
"""File suffixes (lower case) read as 2D images."""

_TIFF_SUFFIXES = (".tif", ".tiff")
_UINT32_MAX = 2**32 - 1
_MAX_CHANNELS = 4


class DataError(ValueError):
    """A dataset file or folder is missing, unreadable or violates the data contract; the message names the file."""


class OverwriteError(FileExistsError):
    """Writing would replace or mix with files that must be kept (inputs, user-made labels, earlier outputs the user
    did not allow to replace); the message names the file or folder and says how to proceed."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write ``path`` all at once: the block writes the yielded temporary path, which then replaces ``path``.

    The temporary file lies in the same folder (hidden name ``.<name>.<random>.tmp<suffix>``; the suffix is kept so
    writers that pick the format from it still do), and ``os.replace`` moves it onto ``path`` only after the block
    finished, so an interrupted or failing write never leaves a half-written ``path``: either the old file (or no
    file) or the complete new one. If the block raises, the temporary file is removed. Parent folders are created.

    Example::

        with atomic_path("out/a.tif") as tmp:
            tifffile.imwrite(tmp, labels)
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp{p.suffix}")
    try:
        yield tmp
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is an existing file whose suffix is one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    p = Path(path)
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _read_raw(path: Path) -> np.ndarray:
    """Decode one file to a numpy array; any decoder failure becomes a :class:`DataError` naming the file."""
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an image file")
    suffix = path.suffix.lower()
    try:
        if suffix in _TIFF_SUFFIXES:
            import tifffile

            arr = tifffile.imread(str(path))
        else:
            import imageio.v3 as iio

            arr = iio.imread(str(path))
    except Exception as exc:  # decoders raise many unrelated types for corrupt files
        raise DataError(f"{path}: cannot read image file ({type(exc).__name__}: {exc})") from exc
    arr = np.asarray(arr)
    if arr.dtype == object or arr.size == 0:
        raise DataError(f"{path}: cannot read image file (empty or undecodable content)")
    return arr


def _to_2d_layout(arr: np.ndarray, path: Path) -> np.ndarray:
    """Bring a decoded array to (H, W) or (H, W, C) with C <= 4, or raise a :class:`DataError`.

    Leading singleton axes are dropped; a planar (C, H, W) TIFF with C <= 4 < H, W is moved to channels-last;
    anything else with a third large axis is a 3D stack / time series, which this 2D library does not support.
    """
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] > _MAX_CHANNELS and arr.shape[0] <= _MAX_CHANNELS:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] <= _MAX_CHANNELS):
        return arr
    if arr.ndim < 2:
        raise DataError(
            f"{path}: image has {arr.ndim} dimension(s) {arr.shape}; expected a 2D image (H, W) or (H, W, C)"
        )
    raise DataError(
        f"{path}: image of shape {arr.shape} looks like a 3D stack or time series; only 2D images (H, W) or "
        f"(H, W, C) with C <= {_MAX_CHANNELS} are supported (split stacks into one file per plane)"
    )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a 2D image file.

    Args:
        path: TIFF (``tifffile``) or PNG/JPEG/BMP (``imageio``) file.

    Returns:
        (H, W) or (H, W, C) array, C <= 4, in the file's own dtype and value range (not normalised).

    Raises:
        DataError: the file is missing, unreadable or corrupt, or is not a 2D image (3D stacks are not supported).
    """
    p = Path(path)
    return _to_2d_layout(_read_raw(p), p)


def validate_labels(labels: np.ndarray, source: str | os.PathLike = "<array>") -> np.ndarray:
    """Check an instance label array and return it as a signed integer array.

    Args:
        labels: (H, W) array (or (H, W, 1), or (H, W, C) with identical channels); 0 = background, 1..N objects.
            Bool, integer and integral float dtypes are accepted.
        source: file name used in error messages.

    Returns:
        (H, W) ``int32`` array (``int64`` when the largest id does not fit in int32), values in [0, 2**32 - 1].

    Raises:
        DataError: wrong number of dims, non-integral or non-finite floats, negative ids, ids above uint32.
    """
    arr = np.asarray(labels)
    if arr.ndim == 3 and arr.shape[-1] <= _MAX_CHANNELS:
        if arr.shape[-1] == 1 or all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[-1])):
            arr = arr[..., 0]
        else:
            raise DataError(
                f"{source}: label image has {arr.shape[-1]} different channels {arr.shape}; expected one channel "
                "of integer instance ids (H, W)"
            )
    if arr.ndim != 2:
        extra = " (3D label stacks are not supported)" if arr.ndim == 3 else ""
        raise DataError(f"{source}: labels have shape {arr.shape}; expected a 2D (H, W) label image{extra}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{source}: float labels contain NaN or infinite values; expected integer instance ids")
        if not np.array_equal(arr, np.round(arr)):
            raise DataError(f"{source}: float labels are not integral (e.g. 0.5); expected integer instance ids")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{source}: labels have dtype {arr.dtype}; expected integer instance ids")
    if arr.size == 0:
        raise DataError(f"{source}: label image is empty (shape {arr.shape})")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise DataError(f"{source}: labels contain negative values (min {lo}); expected 0 = background, 1..N objects")
    if hi > _UINT32_MAX:
        raise DataError(f"{source}: label id {hi} is larger than uint32 allows ({_UINT32_MAX})")
    out_dtype = np.int32 if hi <= np.iinfo(np.int32).max else np.int64
    return arr.astype(out_dtype, copy=False)


def _read_mask_dir(path: Path) -> np.ndarray:
    """Paint a DSB2018 ``masks/`` directory (one binary mask per object) into an (H, W) label image.

    Masks are painted in sorted file-name order with ids 1..N (a later mask overwrites an earlier one where they
    overlap); masks with no foreground pixel are skipped so that ids stay consecutive.
    """
    files = sorted(f for f in path.iterdir() if is_image_file(f))
    if not files:
        raise DataError(f"{path}: mask directory holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    labels: np.ndarray | None = None
    next_id = 1
    for f in files:
        mask = read_image(f)
        if mask.ndim == 3:
            mask = mask[..., : min(mask.shape[-1], 3)].max(axis=-1)
        if labels is None:
            labels = np.zeros(mask.shape, dtype=np.int32)
        elif mask.shape != labels.shape:
            raise DataError(f"{f}: mask shape {mask.shape} differs from the other masks in {path} {labels.shape}")
        fg = mask > 0
        if fg.any():
            labels[fg] = next_id
            next_id += 1
    assert labels is not None
    return labels


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read instance labels from a label image file or a DSB2018 ``masks/`` directory.

    Args:
        path: a label image (TIFF/PNG, (H, W), 0 = background, 1..N objects), or a directory of binary mask files
            (one object per file, painted in sorted name order with ids 1..N).

    Returns:
        (H, W) ``int32`` array (``int64`` only for ids above 2**31 - 1).

    Raises:
        DataError: naming the file and the problem (missing, corrupt, 3D, non-integral floats, negative, > uint32).
    """
    p = Path(path)
    if p.is_dir():
        return _read_mask_dir(p)
    return validate_labels(_read_raw(p), p)


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write an (H, W) or (1, H, W) instance label image as a zlib-compressed TIFF.

    The file is ``uint16`` when the largest id is below 65536, else ``uint32``. Parent folders are created. The write
    is atomic (:func:`atomic_path`): an interrupted write leaves the previous file (or none), never a partial one.

    Raises:
        DataError: the labels violate the contract (see :func:`validate_labels`).
    """
    p = Path(path)
    arr = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    arr = validate_labels(arr, p)
    dtype = np.uint16 if arr.max() < 2**16 else np.uint32
    import tifffile

    with atomic_path(p) as tmp:
        tifffile.imwrite(str(tmp), arr.astype(dtype), compression="zlib")
