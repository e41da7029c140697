"""Point annotations (locations of interest, LOIs) and image-level foreground masks for LACSS.

LACSS (Shrestha, Kuang & Yu, "Efficient end-to-end learning for cell segmentation with machine generated weak
annotations", Communications Biology 6:232, 2023) learns from one rough location per cell and a foreground mask of
the whole image. Both can be

- simulated from full instance labels: :func:`simulate_points` (instance centroids, optionally jittered with a
  Gaussian whose draw is a deterministic function of (image id, seed)) and ``labels > 0`` for the mask;
- machine made from an image channel, the paper's way: :func:`detect_points` (difference-of-Gaussians filter, then
  local maxima above a threshold, e.g. nuclei in a DAPI channel) and :func:`threshold_mask` (Otsu threshold);
- read from user files beside the images (data contract, ``docs/architecture.md``)::

      <dataset>/weak/points/<id>.csv    header ``y,x``, one row per cell, pixel coordinates (row, column), floats ok
      <dataset>/weak/masks/<id>.*       foreground mask image, > 0 = foreground

Points are (K, 2) float64 arrays of (y, x) pixel coordinates (pixel (r, c) has coordinates (r, c)).
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np
from monai.utils import convert_to_numpy
from scipy import ndimage as ndi

from cellseg_monai.annotations.foreground_count import find_weak_mask, read_foreground_mask
from cellseg_monai.annotations.partial import kept_ids
from cellseg_monai.data.io import DataError, validate_labels

__all__ = [
    "clicked_ids",
    "detect_points",
    "find_weak_points",
    "points_seed",
    "read_points_csv",
    "read_weak_mask",
    "read_weak_points",
    "simulate_points",
    "threshold_mask",
    "write_points_csv",
]


def _as_2d(arr: object, name: str) -> np.ndarray:
    a = convert_to_numpy(arr, wrap_sequence=True)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (H, W) or (1, H, W), got shape {a.shape}")
    return a


def points_seed(image_id: str, seed: int) -> int:
    """Stable 64-bit seed of the point jitter of one image: a SHA-256 digest of (image id, seed)."""
    digest = hashlib.sha256(f"points\x1f{image_id}\x1f{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def clicked_ids(labels: object, image_id: str, seed: int = 0, fraction: float = 1.0) -> np.ndarray:
    """Sorted ids of the instances that get a simulated click: every instance at ``fraction`` 1.0, else those of
    :func:`~cellseg_monai.annotations.partial.kept_ids` (``max(1, ceil(fraction · n))`` per image, the same cells
    that partial labels keep at that fraction, in every epoch and on every machine)."""
    lab = np.asarray(convert_to_numpy(labels, wrap_sequence=True))
    if isinstance(fraction, bool) or not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction of clicked cells must be in (0, 1], got {fraction!r}")
    if float(fraction) < 1.0:
        return kept_ids(lab, image_id, seed=seed, fraction=float(fraction))
    ids = np.unique(lab)
    return ids[ids != 0].astype(np.int64)


def simulate_points(
    labels: object, image_id: str, seed: int = 0, jitter: float = 0.0, fraction: float = 1.0
) -> np.ndarray:
    """One LOI per clicked instance: its centroid, optionally displaced by N(0, jitter²) per axis.

    Args:
        labels: (H, W) or (1, H, W) integer instance labels (numpy or torch), 0 = background.
        image_id: image id; with ``seed`` it fixes the jitter draw and the clicked cells (the same in every epoch,
            no label leak).
        seed: user seed.
        jitter: standard deviation of the displacement in pixels, >= 0 (0: exact centroids).
        fraction: share of the instances clicked, in (0, 1] (:func:`clicked_ids`); 1.0: every instance.

    Returns:
        (K, 2) float64 (y, x) in instance-id order, K = number of clicked instances, clipped to the image.

    Raises:
        ValueError: negative jitter, a fraction outside (0, 1] or a label image that is not 2D.
        DataError: labels violating the contract (see :func:`cellseg_monai.data.io.validate_labels`).
    """
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    lab = validate_labels(_as_2d(labels, "labels"))
    ids = np.unique(lab)
    ids = ids[ids != 0]
    if ids.size == 0:
        return np.zeros((0, 2))
    pts = np.asarray(ndi.center_of_mass(np.ones(lab.shape), lab, ids), dtype=np.float64).reshape(-1, 2)
    if jitter > 0:
        rng = np.random.default_rng(points_seed(image_id, seed))
        pts = pts + rng.normal(0.0, jitter, size=pts.shape)  # drawn for every cell: a cell's jitter is fraction-free
    h, w = lab.shape
    pts = np.clip(pts, 0.0, [h - 1, w - 1])
    return pts[np.isin(ids, clicked_ids(lab, image_id, seed, fraction))]


def detect_points(
    image_channel: object,
    sigma_small: float = 2.0,
    sigma_large: float = 4.0,
    min_distance: int = 3,
    threshold: float = 0.05,
) -> np.ndarray:
    """Machine-made LOIs: local maxima of a difference-of-Gaussians (DoG) filtered channel (LACSS, Methods).

    ``D = G_{sigma_small} * I - G_{sigma_large} * I`` is a blob detector for bright blobs of radius
    ~ sqrt(2) · sigma; a pixel is a LOI when it is the maximum of ``D`` over a (2·min_distance+1)² window and
    ``D > threshold``. Use a bright-object channel (e.g. DAPI / the nucleus channel normalised to [0, 1]).

    Args:
        image_channel: (H, W) or (1, H, W) float image, bright objects, typically in [0, 1].
        sigma_small: inner Gaussian sigma in pixels (> 0).
        sigma_large: outer Gaussian sigma in pixels (> sigma_small).
        min_distance: minimal distance in pixels between two maxima (>= 1).
        threshold: minimal DoG response, in the image's intensity units.

    Returns:
        (K, 2) float64 (y, x) of the maxima, sorted by decreasing response.
    """
    if not 0 < sigma_small < sigma_large:
        raise ValueError(f"need 0 < sigma_small < sigma_large, got {sigma_small}, {sigma_large}")
    if int(min_distance) < 1:
        raise ValueError(f"min_distance must be >= 1, got {min_distance}")
    img = _as_2d(image_channel, "image_channel").astype(np.float64)
    if not np.all(np.isfinite(img)):
        raise ValueError("image_channel holds NaN or infinite values")
    dog = ndi.gaussian_filter(img, sigma_small) - ndi.gaussian_filter(img, sigma_large)
    size = 2 * int(min_distance) + 1
    peaks = (dog == ndi.maximum_filter(dog, size=size, mode="nearest")) & (dog > threshold)
    # plateaus give several equal maxima: keep one per connected plateau
    lab, n = ndi.label(peaks)
    if n == 0:
        return np.zeros((0, 2))
    pts = np.asarray(ndi.center_of_mass(peaks, lab, np.arange(1, n + 1)), dtype=np.float64).reshape(-1, 2)
    resp = dog[np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)]
    return pts[np.argsort(-resp, kind="stable")]


def threshold_mask(image_channel: object, threshold: float | None = None) -> np.ndarray:
    """Image-level foreground mask of a channel: ``channel > threshold`` (Otsu's threshold when None).

    Args:
        image_channel: (H, W) or (1, H, W) image, bright foreground.
        threshold: absolute threshold in the image's units, or None for Otsu (``skimage.filters.threshold_otsu``).

    Returns:
        (H, W) uint8 mask in {0, 1}; a constant image gives an all-zero mask.
    """
    img = _as_2d(image_channel, "image_channel").astype(np.float64)
    if threshold is None:
        if img.size == 0 or img.max() <= img.min():
            return np.zeros(img.shape, np.uint8)
        from skimage.filters import threshold_otsu

        threshold = float(threshold_otsu(img))
    return (img > threshold).astype(np.uint8)


def read_points_csv(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a points CSV with header ``y,x`` (more columns are ignored).

    Args:
        path: CSV file.
        shape: optional (H, W) of the image; points outside it are an error.

    Returns:
        (K, 2) float64 (y, x).

    Raises:
        DataError: naming the file: missing, no ``y``/``x`` columns, a value that is not a finite number, or a
            point outside ``shape``.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: points file does not exist")
    try:
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "y" not in fields or "x" not in fields:
                raise DataError(f"{p}: points CSV needs a header with columns 'y' and 'x'; got {reader.fieldnames}")
            ky = reader.fieldnames[fields.index("y")]
            kx = reader.fieldnames[fields.index("x")]
            rows = [(r[ky], r[kx]) for r in reader]
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: points CSV is not text ({exc})") from exc
    pts = np.zeros((len(rows), 2))
    for i, (y, x) in enumerate(rows):
        try:
            pts[i] = float(y), float(x)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{p}: row {i + 2} has a non-numeric coordinate ({y!r}, {x!r})") from exc
    if not np.all(np.isfinite(pts)):
        raise DataError(f"{p}: points CSV holds NaN or infinite coordinates")
    if shape is not None and len(pts):
        h, w = shape
        bad = (pts[:, 0] < -0.5) | (pts[:, 0] > h - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > w - 0.5)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{p}: point {tuple(pts[i])} (row {i + 2}) lies outside the {h}x{w} image")
    return pts


def write_points_csv(path: str | os.PathLike, points: np.ndarray) -> Path:
    """Write (K, 2) (y, x) points as a ``y,x`` CSV (readable by :func:`read_points_csv`); returns the path."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["y", "x"])
        writer.writerows([[f"{y:.3f}", f"{x:.3f}"] for y, x in pts])
    return p


def find_weak_points(dataset_dir: str | os.PathLike, image_id: str) -> Path:
    """Path of ``<dataset_dir>/weak/points/<image_id>.csv``.

    Raises:
        DataError: naming the expected file when it does not exist.
    """
    path = Path(dataset_dir) / "weak" / "points" / f"{image_id}.csv"
    if not path.is_file():
        raise DataError(f"{path}: points file does not exist")
    return path


def read_weak_points(dataset_dir: str | os.PathLike, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """User-made LOIs of one image (``weak/points/<id>.csv``) as (K, 2) float64 (y, x)."""
    return read_points_csv(find_weak_points(dataset_dir, image_id), shape)


def read_weak_mask(dataset_dir: str | os.PathLike, image_id: str) -> np.ndarray:
    """User-made foreground mask of one image (``weak/masks/<id>.*``) as (H, W) uint8 in {0, 1}."""
    return read_foreground_mask(find_weak_mask(dataset_dir, image_id))
