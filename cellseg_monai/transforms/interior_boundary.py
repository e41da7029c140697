"""The three-class target encoding of instance labels (background / interior / boundary) and its decoding.

A semantic network cannot output instance ids, but it can learn, per pixel, whether it is background, the
interior of a nucleus, or the boundary of a nucleus. Boundaries separate touching nuclei, so the connected
interiors are the instances again (Caicedo et al., "Evaluation of deep learning strategies for nucleus
segmentation in fluorescence images", Cytometry A 95(9), 2019, the "3-class" U-Net). This is the target of the
fully supervised reference bundle ``bundles/supervised_unet`` of the cellseg-monai benchmark.

- :class:`InstancesToInteriorBoundary` / ``...d``: instance labels (1, H, W) → class map (1, H, W), the training
  target. Apply it **after** the spatial augmentation, so crops and rotations act on instance labels.
- :class:`InteriorBoundaryToInstances` / ``...d``: class probabilities (3, H, W) → instance labels (1, H, W), the
  post-processing; the math is :func:`cellseg_monai.postprocessing.interior_boundary.interior_boundary_to_instances`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy, ensure_tuple
from scipy import ndimage as ndi

from cellseg_monai.postprocessing.interior_boundary import interior_boundary_to_instances
from cellseg_monai.transforms.postprocessing import labels_like

__all__ = [
    "BACKGROUND",
    "BOUNDARY",
    "INTERIOR",
    "InstancesToInteriorBoundary",
    "InstancesToInteriorBoundaryd",
    "InteriorBoundaryToInstances",
    "InteriorBoundaryToInstancesd",
    "instances_to_interior_boundary",
]

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def instances_to_interior_boundary(labels: np.ndarray, boundary_width: int = 1) -> np.ndarray:
    """Instance labels → class map: 0 background, 1 interior, 2 boundary.

    A pixel of an instance is *boundary* when a pixel of another label (another instance or the background) lies
    within city-block distance ``boundary_width`` of it; its other pixels are *interior*. For ``boundary_width=1``
    that is ``skimage.segmentation.find_boundaries(labels, connectivity=1, mode="inner")``. Pixels beyond the image
    border do not count (the border is mirrored), so an object cut by a crop has no boundary along the cut.
    With width ≥ 1 the interiors of two different instances are never 8-connected to each other.

    Args:
        labels: (H, W) integer instance labels, 0 = background.
        boundary_width: thickness (px) of the boundary band inside each object, ≥ 1.

    Returns:
        (H, W) int64 class map with values in {0, 1, 2}.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2D (H, W) array, got shape {tuple(labels.shape)}.")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise TypeError(f"labels must be integer instance ids, got dtype {labels.dtype}.")
    if isinstance(boundary_width, bool) or not isinstance(boundary_width, (int, np.integer)) or boundary_width < 1:
        raise ValueError(f"boundary_width must be an integer >= 1 (px), got {boundary_width!r}.")
    labels = labels.astype(np.int64)
    # diamond footprint = all offsets of city-block length <= boundary_width
    footprint = ndi.iterate_structure(ndi.generate_binary_structure(2, 1), int(boundary_width))
    neighbours_differ = ndi.grey_dilation(labels, footprint=footprint, mode="reflect") != ndi.grey_erosion(
        labels, footprint=footprint, mode="reflect"
    )
    classes = np.where(labels > 0, INTERIOR, BACKGROUND).astype(np.int64)
    classes[(labels > 0) & neighbours_differ] = BOUNDARY
    return classes


class InstancesToInteriorBoundary(Transform):
    """Instance labels → background / interior / boundary class map (the training target).

    Args:
        boundary_width: thickness (px) of the boundary band, see :func:`instances_to_interior_boundary`.

    Shapes:
        input (1, H, W) integer instance labels (tensor, MetaTensor or ndarray) → output (1, H, W) int64 class map
        of the same container type (MetaTensor meta is kept), values 0 background, 1 interior, 2 boundary.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, boundary_width: int = 1) -> None:
        instances_to_interior_boundary(np.zeros((1, 1), np.int32), boundary_width)  # validate early
        self.boundary_width = int(boundary_width)

    def __call__(self, labels: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if labels.ndim != 3 or labels.shape[0] != 1:
            raise ValueError(
                f"InstancesToInteriorBoundary expects one-channel (1, H, W) instance labels, "
                f"got shape {tuple(labels.shape)}."
            )
        array = convert_to_numpy(labels, wrap_sequence=True)
        if np.issubdtype(array.dtype, np.floating):
            if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
                raise TypeError("instance labels must hold integer ids; got non-integer floating-point values.")
            array = array.astype(np.int64)
        classes = instances_to_interior_boundary(array[0], self.boundary_width)[None]
        out, *_ = convert_to_dst_type(
            classes, dst=labels, dtype=torch.int64 if isinstance(labels, torch.Tensor) else np.int64
        )
        return out


class InstancesToInteriorBoundaryd(MapTransform):
    """Dictionary wrapper of :class:`InstancesToInteriorBoundary`.

    Args:
        keys: key(s) of (1, H, W) instance labels.
        output_key: where to write the class map, one per key; None overwrites the labels in place.
        boundary_width: see :func:`instances_to_interior_boundary`.
        allow_missing_keys: skip absent keys instead of raising.
    """

    backend = InstancesToInteriorBoundary.backend

    def __init__(
        self,
        keys: KeysCollection = "label",
        output_key: str | Sequence[str] | None = None,
        boundary_width: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys: tuple[Hashable, ...] = tuple(self.keys) if output_key is None else ensure_tuple(output_key)
        if len(self.output_keys) != len(self.keys):
            raise ValueError(
                f"output_key {output_key!r} gives {len(self.output_keys)} output keys for {len(self.keys)} keys "
                f"{self.keys}; give one output key per key (or None to overwrite the inputs)."
            )
        self.encoder = InstancesToInteriorBoundary(boundary_width=boundary_width)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, output_key in self.key_iterator(d, self.output_keys):
            d[output_key] = self.encoder(d[key])
        return d


class InteriorBoundaryToInstances(Transform):
    """Background / interior / boundary probabilities → instance labels (seeded watershed).

    Args:
        interior_threshold, foreground_threshold, min_size, seed_min_size, connectivity, keep_unseeded: see
            :func:`cellseg_monai.postprocessing.interior_boundary.interior_boundary_to_instances`.

    Shapes:
        input (3, H, W) float probabilities in [0, 1] (channels background, interior, boundary; e.g. a softmax)
        → output (1, H, W) int32 MetaTensor on the input's device, 0 background, objects 1..N; a MetaTensor
        input's ``meta`` and ``applied_operations`` are copied.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        interior_threshold: float = 0.5,
        foreground_threshold: float = 0.5,
        min_size: int = 16,
        seed_min_size: int = 4,
        connectivity: int = 1,
        keep_unseeded: bool = True,
    ) -> None:
        self.kwargs = {
            "interior_threshold": interior_threshold,
            "foreground_threshold": foreground_threshold,
            "min_size": min_size,
            "seed_min_size": seed_min_size,
            "connectivity": connectivity,
            "keep_unseeded": keep_unseeded,
        }

    def __call__(self, prob: torch.Tensor | np.ndarray) -> MetaTensor:
        if prob.ndim != 3 or prob.shape[0] != 3:
            raise ValueError(
                "InteriorBoundaryToInstances expects (3, H, W) probabilities of background, interior and boundary, "
                f"got shape {tuple(prob.shape)}."
            )
        array = convert_to_numpy(prob.float() if isinstance(prob, torch.Tensor) else prob, wrap_sequence=True)
        labels = interior_boundary_to_instances(array, **self.kwargs)
        return labels_like(labels, prob)


class InteriorBoundaryToInstancesd(MapTransform):
    """Dictionary wrapper of :class:`InteriorBoundaryToInstances`, plus the foreground probability.

    Reads (3, H, W) class probabilities under ``keys`` (exactly one key), writes (1, H, W) int32 instance labels
    under ``output_key`` and, unless ``fg_key`` is None, the (1, H, W) foreground probability
    P(interior) + P(boundary), clipped to [0, 1], under ``fg_key`` (for pixel metrics and
    ``SaveInstancesd(prob_key=...)`` scores).

    Args:
        keys: key of the (3, H, W) probabilities.
        output_key: key of the instance labels.
        fg_key: key of the foreground probability, or None.
        interior_threshold, foreground_threshold, min_size, seed_min_size, connectivity, keep_unseeded: see
            :class:`InteriorBoundaryToInstances`.
        allow_missing_keys: skip an absent key instead of raising.
    """

    backend = InteriorBoundaryToInstances.backend

    def __init__(
        self,
        keys: KeysCollection = "prob",
        output_key: str = "pred",
        fg_key: str | None = "fg_prob",
        interior_threshold: float = 0.5,
        foreground_threshold: float = 0.5,
        min_size: int = 16,
        seed_min_size: int = 4,
        connectivity: int = 1,
        keep_unseeded: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"InteriorBoundaryToInstancesd takes exactly one key; got {self.keys}.")
        self.output_key = output_key
        self.fg_key = fg_key
        self.decoder = InteriorBoundaryToInstances(
            interior_threshold=interior_threshold,
            foreground_threshold=foreground_threshold,
            min_size=min_size,
            seed_min_size=seed_min_size,
            connectivity=connectivity,
            keep_unseeded=keep_unseeded,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            prob = d[key]
            labels = self.decoder(prob)
            if self.fg_key is not None:  # clipped: a float32 softmax can sum to 1 + 1 ulp
                fg = prob[1:2] + prob[2:3]
                d[self.fg_key] = fg.clamp(0.0, 1.0) if isinstance(fg, torch.Tensor) else np.clip(fg, 0.0, 1.0)
            d[self.output_key] = labels
        return d
