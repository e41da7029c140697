"""Foreground masks and probability maps → instance label images.

The classic recipe used by most nucleus pipelines (CellProfiler's "IdentifyPrimaryObjects", ImageJ's binary
watershed, the scikit-image watershed example):

1. threshold the foreground probability (or take a binary mask),
2. fill small holes,
3. connected components,
4. optionally split touching nuclei with a marker-controlled watershed on the Euclidean distance transform
   (Beucher & Meyer 1993; markers are the maxima of the smoothed distance transform, one per nucleus),
5. drop objects smaller than ``min_size`` and relabel ``1..N``.

Defaults are chosen for nuclei of roughly 10–40 px diameter:

- ``min_distance=5``: two nuclei are seeded separately only when their distance-transform peaks are at least 5 px
  apart (Chebyshev distance), i.e. centres of two touching nuclei of diameter ≥ 10 px.
- ``h=1.0``: a peak seeds a nucleus only when the valley ("neck") between it and any higher peak is at least 1 px
  deep in the distance transform (h-maxima, Soille 2003, §6.3.4). Two touching discs of radius r whose centres
  are d apart have a neck of depth r - sqrt(r² - d²/4); for r = 5, d = 8 that is 2 px, while boundary noise of a
  thresholded map makes bumps well below 1 px after smoothing.
- ``relative_h=0.0``: off. When set, a connected component whose distance transform peaks at ``R`` px needs a
  neck of ``max(h, relative_h * R)`` px: the valley scales with the nucleus, so a large nucleus with a dent in its
  outline (H&E) is not cut in two by the ``h`` that separates small touching ones (fluorescence). ImPartial uses
  0.1, chosen on ``train`` images (its docs).
- ``sigma=1.0``: Gaussian smoothing (px) of the distance transform before looking for peaks.
- ``min_size=16``: objects of fewer than 16 px (a 4 × 4 square, diameter ≈ 4.5 px) are noise. Watershed fragments
  smaller than that are not deleted (which would bite holes into nuclei) but merged into their neighbours by
  flooding again without their markers.
- ``connectivity=1``: 4-connectivity, so nuclei touching only at a corner stay separate objects.
- ``fill_holes=True, max_hole_size=256``: holes up to 256 px (a dark nucleolus, diameter ≈ 18 px) are filled;
  larger enclosed background (a gap ringed by several nuclei in dense tissue) is left alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed

from .extrema import h_maxima_of_objects, peak_local_max_of_labels

__all__ = [
    "WatershedParams",
    "labels_on_border",
    "mask_to_instances",
    "probability_to_instances",
    "remove_small_labels",
    "seed_unseeded_components",
]


def _check_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2D (H, W) array, got shape {tuple(array.shape)}.")
    return array


@dataclass(frozen=True)
class WatershedParams:
    """The mask → instances settings (steps 2–5 of the module docstring), defined once for every function, transform
    and network that ends in :func:`mask_to_instances`; each of those takes ``params`` and/or the fields below as
    keyword arguments (a keyword overrides the field of ``params``).

    Args:
        min_size: objects with fewer pixels are removed (watershed fragments are merged into a neighbour instead).
        watershed: split touching objects with a distance-transform watershed; False keeps connected components.
        min_distance: minimum distance (px, Chebyshev) between two markers of the watershed, >= 1.
        h: minimum depth (px) of the distance-transform valley between two markers (h-maxima), > 0.
        relative_h: the valley must also be ``relative_h`` times the peak of the distance transform in its
            connected component (0: ``h`` alone), >= 0.
        sigma: Gaussian smoothing (px) of the distance transform before finding markers; 0 disables it.
        connectivity: 1 for 4-connected, 2 for 8-connected objects.
        fill_holes: fill holes inside the foreground before labelling.
        max_hole_size: largest hole (px) that is filled; None fills every hole.

    Raises:
        ValueError: a value out of its range (checked on construction).
    """

    min_size: int = 16
    watershed: bool = True
    min_distance: int = 5
    h: float = 1.0
    relative_h: float = 0.0
    sigma: float = 1.0
    connectivity: int = 1
    fill_holes: bool = True
    max_hole_size: int | None = 256

    def __post_init__(self) -> None:
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}.")
        if self.min_distance < 1:
            raise ValueError(f"min_distance must be >= 1 px, got {self.min_distance}.")
        if self.h <= 0:
            raise ValueError(f"h must be > 0 (depth in px of the distance-transform valley), got {self.h}.")
        if self.relative_h < 0:
            raise ValueError(
                f"relative_h must be >= 0 (a fraction of each object's peak distance), got {self.relative_h}."
            )
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}.")
        if self.connectivity not in (1, 2):
            raise ValueError(f"connectivity must be 1 (4-connected) or 2 (8-connected), got {self.connectivity}.")

    @classmethod
    def of(cls, params: WatershedParams | None = None, **overrides: Any) -> WatershedParams:
        """``params`` (default: the defaults) with the fields named in ``overrides`` replaced.

        Raises:
            TypeError: an override that is not a field (the message lists the fields).
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown watershed parameter(s) {unknown}; the parameters are {sorted(names)}.")
        return replace(params or cls(), **overrides) if overrides else (params or cls())

    def as_dict(self) -> dict[str, Any]:
        """The fields as keyword arguments."""
        return asdict(self)


def _fill_holes(mask: np.ndarray, max_hole_size: int | None) -> np.ndarray:
    """Fill background regions enclosed by foreground whose area is ``<= max_hole_size`` (all when None).

    A hole is a 4-connected background region that does not reach the image border — what
    ``scipy.ndimage.binary_fill_holes`` fills — found here with one labelling of the background.
    """
    background, n = ndi.label(~mask)
    if n == 0:
        return mask
    hole = np.ones(n + 1, dtype=bool)
    hole[0] = False
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        hole[edge] = False
    if max_hole_size is not None:
        hole &= np.bincount(background.ravel(), minlength=n + 1) <= max_hole_size
    return mask | hole[background]


def labels_on_border(labels: np.ndarray) -> np.ndarray:
    """Sorted non-zero ids of ``labels`` (H, W) that have a pixel on the array's border."""
    labels = _check_2d(labels, "labels")
    ids = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return ids[ids != 0]


def remove_small_labels(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set labels with fewer than ``min_size`` pixels to 0 (not relabelled)."""
    if min_size <= 1:
        return labels
    small = np.bincount(labels.ravel()) < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def seed_unseeded_components(markers: np.ndarray, components: np.ndarray, min_size: int) -> np.ndarray:
    """Give every component that holds no marker and has ``>= min_size`` pixels one marker: the component itself."""
    n = int(components.max())
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[components[markers > 0]] = True
    big = np.bincount(components.ravel(), minlength=n + 1) >= max(min_size, 1)
    wanted = ~seeded & big
    wanted[0] = False
    fill = wanted[components]
    markers = markers.copy()
    markers[fill] = components[fill] + int(markers.max())
    return markers


def _watershed_split(
    mask: np.ndarray,
    components: np.ndarray,
    min_size: int,
    min_distance: int,
    h: float,
    sigma: float,
    connectivity: int,
    relative_h: float = 0.0,
) -> np.ndarray:
    """Split touching objects of ``components`` by a distance-transform watershed restricted to ``mask``."""
    dist = ndi.distance_transform_edt(mask)
    if sigma > 0:
        dist = ndi.gaussian_filter(dist, sigma) * mask
    if relative_h > 0:
        # scale each component's distances by h / max(h, relative_h * peak): a valley of the component's own depth
        # becomes h deep; positive factors per component keep the order of its pixels, so flooding is unchanged
        n = int(components.max())
        peak = np.asarray(ndi.maximum(dist, components, index=np.arange(1, n + 1)), dtype=np.float64)
        factor = np.concatenate([[1.0], h / np.maximum(h, relative_h * peak)])
        dist = dist * factor[components]
    # markers: h-maxima regions (a plateau is one region) that hold a peak at least min_distance from higher peaks
    regions, _ = ndi.label(h_maxima_of_objects(dist, h).astype(bool) & mask, structure=np.ones((3, 3), dtype=bool))
    peaks = peak_local_max_of_labels(dist, components, min_distance)
    keep = np.zeros(int(regions.max()) + 1, dtype=bool)
    keep[regions[tuple(peaks.T)]] = True
    keep[0] = False
    markers = np.where(keep[regions], regions, 0)
    markers = seed_unseeded_components(markers, components, min_size)

    structure = ndi.generate_binary_structure(2, connectivity)
    labels = watershed(-dist, markers, mask=mask, connectivity=structure)
    # fragments below min_size: drop their markers and flood again so their pixels join the neighbouring nucleus
    areas = np.bincount(labels.ravel(), minlength=int(markers.max()) + 1)
    small = areas < min_size
    small[0] = False
    if small[markers].any():
        markers = np.where(small[markers], 0, markers)
        markers = seed_unseeded_components(markers, components, min_size)
        labels = watershed(-dist, markers, mask=mask, connectivity=structure)
    return labels


def mask_to_instances(mask: np.ndarray, params: WatershedParams | None = None, **overrides: Any) -> np.ndarray:
    """Binary foreground mask → instance labels (see the module docstring for the steps and defaults).

    Args:
        mask: (H, W) foreground mask, bool or anything whose non-zero pixels are foreground.
        params: the settings, :class:`WatershedParams` (default: its defaults).
        overrides: fields of :class:`WatershedParams` that replace those of ``params`` (``min_size=``,
            ``watershed=``, ``min_distance=``, ``h=``, ``relative_h=``, ``sigma=``, ``connectivity=``, ``fill_holes=``,
            ``max_hole_size=``).

    Returns:
        (H, W) int32 instance labels, 0 = background, objects numbered 1..N consecutively.
    """
    p = WatershedParams.of(params, **overrides)
    mask = _check_2d(mask, "mask").astype(bool)
    if p.fill_holes:
        mask = _fill_holes(mask, p.max_hole_size)
    components, _ = ndi.label(mask, structure=ndi.generate_binary_structure(2, p.connectivity))
    if p.watershed and components.max() > 0:
        labels = _watershed_split(
            mask, components, p.min_size, p.min_distance, p.h, p.sigma, p.connectivity, p.relative_h
        )
    else:
        labels = components
    labels = remove_small_labels(labels, p.min_size)
    return relabel_sequential(labels)[0].astype(np.int32)


def probability_to_instances(
    prob: np.ndarray, threshold: float = 0.5, params: WatershedParams | None = None, **overrides: Any
) -> np.ndarray:
    """Foreground probability map → instance labels: ``mask_to_instances(prob > threshold, ...)``.

    Args:
        prob: (H, W) float foreground probability in [0, 1] (any real values work; pixels ``> threshold`` are
            foreground). NaN is rejected.
        threshold: probability above which a pixel is foreground.
        params, overrides: the mask → instances settings, see :func:`mask_to_instances`.

    Returns:
        (H, W) int32 instance labels, 0 = background, objects numbered 1..N consecutively.

    Example:
        >>> yy, xx = np.mgrid[:40, :60]
        >>> discs = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 100) | ((yy - 20) ** 2 + (xx - 37) ** 2 <= 100)
        >>> int(probability_to_instances(discs.astype(float)).max()), int(
        ...     probability_to_instances(discs.astype(float), watershed=False).max()
        ... )
        (2, 1)
    """
    prob = _check_2d(prob, "prob")
    if not np.issubdtype(prob.dtype, np.number) and prob.dtype != bool:
        raise TypeError(f"prob must be a numeric array, got dtype {prob.dtype}.")
    if np.isnan(prob).any():
        raise ValueError("prob contains NaN values.")
    return mask_to_instances(prob > threshold, params, **overrides)
