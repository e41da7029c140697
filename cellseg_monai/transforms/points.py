"""LACSS weak-label transforms: locations of interest (LOIs) as a sparse point-label image, and foreground masks.

Representation (chosen so MONAI's spatial transforms keep points and image consistent): the points of an image are
stored as a **point map**, a (1, H, W) int32 image that is 0 everywhere except at the pixel nearest to each point,
where it holds the point's id (the instance id for points simulated from labels, ``k + 1`` for the k-th detected or
user-made point). Crops, pads, flips and 90° rotations move the map with the image (use nearest / constant modes), and
:func:`map_to_points` turns it back into coordinates. The price is pixel precision (sub-pixel coordinates are rounded)
and two points that round to the same pixel keep only the later one.

Place the simulating transforms right after loading, before any random transform: points drawn from the full,
untransformed label image are a function of (image id, seed) and do not change over epochs.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy

from cellseg_monai.annotations.clicked_components import cut_off_points
from cellseg_monai.annotations.points import (
    clicked_ids,
    detect_points,
    find_weak_points,
    read_points_csv,
    read_weak_mask,
    simulate_points,
    threshold_mask,
)
from cellseg_monai.data.io import DataError

__all__ = [
    "CutOffPointsd",
    "POINT_SOURCES",
    "MASK_SOURCES",
    "DetectPoints",
    "DetectPointsd",
    "ForegroundMaskd",
    "LoadPointsd",
    "MakePointsd",
    "SimulatePoints",
    "SimulatePointsd",
    "ThresholdMask",
    "map_to_points",
    "points_to_map",
]

POINT_SOURCES: tuple[str, ...] = ("simulate", "detect", "files")
"""Where :class:`MakePointsd` takes the LOIs from: label centroids, DoG detection on a channel, ``weak/points/``."""
MASK_SOURCES: tuple[str, ...] = ("labels", "threshold", "files")
"""Where :class:`ForegroundMaskd` takes the mask from: ``labels > 0``, a thresholded channel, ``weak/masks/``."""


def _meta_like(ref: Any, arr: np.ndarray) -> MetaTensor:
    meta = dict(ref.meta) if isinstance(ref, MetaTensor) else {}
    affine = meta.pop("affine", None)
    return MetaTensor(torch.as_tensor(arr), affine=affine, meta=meta)


def points_to_map(points: np.ndarray, shape: tuple[int, int], ids: np.ndarray | None = None) -> np.ndarray:
    """Rasterise (K, 2) (y, x) points into an (H, W) int32 point map (value = id, 0 elsewhere).

    Args:
        points: (K, 2) float (y, x); points rounded outside the image are dropped.
        shape: (H, W).
        ids: (K,) positive ids; default ``1..K``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ids = np.arange(1, len(pts) + 1) if ids is None else np.asarray(ids).reshape(-1)
    if len(ids) != len(pts):
        raise ValueError(f"got {len(pts)} points but {len(ids)} ids")
    if len(ids) and ids.min() < 1:
        raise ValueError("point ids must be >= 1 (0 is the empty pixel)")
    out = np.zeros(shape, np.int32)
    rc = np.round(pts).astype(np.int64)
    ok = (rc[:, 0] >= 0) & (rc[:, 0] < shape[0]) & (rc[:, 1] >= 0) & (rc[:, 1] < shape[1])
    out[rc[ok, 0], rc[ok, 1]] = ids[ok]
    return out


def map_to_points(point_map: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`points_to_map`: (H, W) or (1, H, W) point map → ((K, 2) float64 (y, x), (K,) int64 ids).

    Points are returned in increasing id order (ties by position).
    """
    arr = convert_to_numpy(point_map, wrap_sequence=True)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"point map must be (H, W) or (1, H, W), got {arr.shape}")
    rr, cc = np.nonzero(arr)
    ids = arr[rr, cc].astype(np.int64)
    order = np.argsort(ids, kind="stable")
    return np.stack([rr, cc], axis=1)[order].astype(np.float64), ids[order]


class SimulatePoints(Transform):
    """Instance labels (1, H, W) → point map (1, H, W) of their centroids (:func:`simulate_points`), id = instance id.

    Args:
        seed: user seed of the jitter and of which cells are clicked.
        jitter: standard deviation of the centroid displacement in pixels.
        fraction: share of each image's cells that get a point, in (0, 1]: the cells of
            :func:`~cellseg_monai.annotations.partial.kept_ids` (``max(1, ceil(fraction · n))`` per image, the same
            cells in every epoch and the same ones partial Mask R-CNN keeps at that fraction). 1.0: every cell.
            Train a partial click set with ``LacssLoss(partial_points=True)``.

    ``__call__(label, sample_id=None)``: ``sample_id`` defaults to ``label.meta["id"]`` (needed when jitter > 0 or
    fraction < 1).
    """

    def __init__(self, seed: int = 0, jitter: float = 0.0, fraction: float = 1.0) -> None:
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {jitter}")
        if isinstance(fraction, bool) or not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"fraction of clicked cells must be in (0, 1], got {fraction!r}")
        self.seed = seed
        self.jitter = jitter
        self.fraction = float(fraction)

    def __call__(self, label: Any, sample_id: str | None = None) -> MetaTensor:
        if sample_id is None:
            sample_id = str(getattr(label, "meta", {}).get("id", "")) if isinstance(label, MetaTensor) else ""
        if not sample_id and (self.jitter > 0 or self.fraction < 1.0):
            raise ValueError(
                "SimulatePoints: a sample id is needed for a deterministic jitter or choice of clicked cells "
                "(label.meta['id'])"
            )
        lab = convert_to_numpy(label, wrap_sequence=True)
        lab2 = lab[0] if lab.ndim == 3 else lab
        pts = simulate_points(lab2, sample_id, seed=self.seed, jitter=self.jitter, fraction=self.fraction)
        ids = clicked_ids(lab2, sample_id, seed=self.seed, fraction=self.fraction)
        return _meta_like(label, points_to_map(pts, lab2.shape, ids)[None])


class SimulatePointsd(MapTransform):
    """Dictionary wrapper of :class:`SimulatePoints`: ``data[points_key]`` = point map of ``data[keys]`` (labels)."""

    def __init__(
        self,
        keys: KeysCollection = "label",
        points_key: str = "points",
        seed: int = 0,
        jitter: float = 0.0,
        allow_missing_keys: bool = False,
        fraction: float = 1.0,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.points_key = points_key
        self.simulator = SimulatePoints(seed, jitter, fraction)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            sid = d.get("id") if isinstance(d.get("id"), str) else None
            d[self.points_key] = self.simulator(d[key], sid)
        return d


class DetectPoints(Transform):
    """Image (C, H, W) → point map (1, H, W) of DoG maxima of one channel (:func:`detect_points`), ids 1..K.

    Args:
        channel: channel index holding bright objects (e.g. the nuclear stain); -1 = mean of all channels.
        sigma_small, sigma_large, min_distance, threshold: see :func:`detect_points`.
        foreground_only: keep only maxima on the channel's Otsu foreground (:func:`threshold_mask`), which drops the
            DoG responses to background noise and texture.
    """

    def __init__(
        self,
        channel: int = -1,
        sigma_small: float = 2.0,
        sigma_large: float = 4.0,
        min_distance: int = 3,
        threshold: float = 0.05,
        foreground_only: bool = True,
    ) -> None:
        self.channel = channel
        self.foreground_only = foreground_only
        self.kwargs = dict(
            sigma_small=sigma_small, sigma_large=sigma_large, min_distance=min_distance, threshold=threshold
        )

    def __call__(self, image: Any) -> MetaTensor:
        img = convert_to_numpy(image, wrap_sequence=True).astype(np.float32)
        if img.ndim == 2:
            img = img[None]
        chan = img.mean(axis=0) if self.channel == -1 else img[self.channel]
        pts = detect_points(chan, **self.kwargs)
        if self.foreground_only and len(pts):
            fg = threshold_mask(chan)
            pts = pts[fg[np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)] > 0]
        return _meta_like(image, points_to_map(pts, chan.shape)[None])


class DetectPointsd(MapTransform):
    """Dictionary wrapper of :class:`DetectPoints`: ``data[points_key]`` = point map detected on ``data[keys]``."""

    def __init__(
        self,
        keys: KeysCollection = "image",
        points_key: str = "points",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.points_key = points_key
        self.detector = DetectPoints(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.points_key] = self.detector(d[key])
        return d


class LoadPointsd(MapTransform):
    """Read user LOIs from a ``y,x`` CSV into a point map (1, H, W) with ids 1..K.

    The CSV is ``data[keys]`` when that is a path; otherwise ``<dataset_dir>/weak/points/<data["id"]>.csv``.

    Args:
        keys: key receiving the point map (and possibly holding the CSV path).
        ref_key: key of the loaded (C, H, W) image giving H and W.
        dataset_dir: dataset folder for the ``weak/points/`` lookup.

    Raises:
        DataError: naming the CSV (missing, malformed, a point outside the image).
    """

    def __init__(
        self,
        keys: KeysCollection = "points",
        ref_key: str = "image",
        dataset_dir: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.ref_key = ref_key
        self.dataset_dir = dataset_dir
        self.strict = not allow_missing_keys

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.ref_key not in d:
            raise KeyError(f"LoadPointsd: ref_key {self.ref_key!r} is not in the data dict")
        shape = tuple(d[self.ref_key].shape[-2:])
        for key in self.keys:
            src = d.get(key)
            if isinstance(src, (str, Path)):
                path = Path(src)
            elif self.dataset_dir is not None and isinstance(d.get("id"), str):
                path = find_weak_points(self.dataset_dir, d["id"])
            elif self.strict:
                raise DataError(f"LoadPointsd: no points file for {d.get('id', '<unknown id>')!r} (no {key!r} path)")
            else:
                continue
            pts = read_points_csv(path, shape)
            d[key] = _meta_like(d[self.ref_key], points_to_map(pts, shape)[None])
        return d


class MakePointsd(MapTransform):
    """LOIs from the configured source, as a point map in ``data[points_key]`` (one switch for bundle configs).

    Args:
        source: "simulate" (centroids of ``data[label_key]``, :class:`SimulatePoints`), "detect" (DoG maxima of
            ``data[image_key]``, :class:`DetectPoints`) or "files" (``weak/points/<id>.csv`` under ``dataset_dir``).
        points_key, label_key, image_key: data keys.
        seed, jitter: simulation parameters.
        dataset_dir: dataset folder (source "files").
        detect: keyword arguments of :class:`DetectPoints`.
        fraction: share of each image's cells clicked by the simulation (:class:`SimulatePoints`); < 1 only with
            source "simulate" (detected and user-made points are used as they are).
    """

    def __init__(
        self,
        source: str = "simulate",
        points_key: str = "points",
        label_key: str = "label",
        image_key: str = "image",
        seed: int = 0,
        jitter: float = 0.0,
        dataset_dir: str | None = None,
        detect: Mapping[str, Any] | None = None,
        fraction: float = 1.0,
    ) -> None:
        if source not in POINT_SOURCES:
            raise ValueError(f"points source must be one of {POINT_SOURCES}, got {source!r}")
        if source != "simulate" and float(fraction) != 1.0:
            raise ValueError(
                f"a fraction of clicked cells ({fraction}) is simulated from full labels: it needs points source "
                f"'simulate', not {source!r} (with partial clicks of your own, train with partial_points true)"
            )
        key = {"simulate": label_key, "detect": image_key, "files": points_key}[source]
        super().__init__(key)
        self.source = source
        if source == "simulate":
            self.inner: MapTransform = SimulatePointsd(label_key, points_key, seed, jitter, fraction=fraction)
        elif source == "detect":
            self.inner = DetectPointsd(image_key, points_key, **dict(detect or {}))
        else:
            if dataset_dir is None:
                raise ValueError("points source 'files' needs dataset_dir")
            self.inner = LoadPointsd(points_key, image_key, dataset_dir)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        if self.source == "simulate" and self.keys[0] not in data:
            raise DataError(
                f"{data.get('image', data.get('id'))}: no labels to simulate points from; for an image with "
                "weak/points/<id>.csv only, train with --points_source files"
            )
        return self.inner(data)


class CutOffPointsd(MapTransform):
    """Give every cell that a training crop cut off from its click a click of its own (:func:`cut_off_points`).

    Place it right after the random crop of a **fully clicked** image: an unclicked mask component that touches the
    crop's border is the visible part of a cell whose click fell outside the crop; it gets a click at its visible
    centroid with a new id (above every id in the map), as the truth does for the cells the image border cuts. Without
    it the location network learns that cut cells are background and misses the cells on a whole image's border. With
    partial clicks leave it out (an unclicked cut cell may simply be unclicked; the partial-clicks loss ignores it).

    Args:
        keys: the point map key(s) ((1, H, W), :mod:`this module <cellseg_monai.transforms.points>`).
        mask_key: the crop's foreground mask ((1, H, W) or (H, W), > 0 = foreground).
        allow_missing_keys: skip a missing point map.
    """

    def __init__(self, keys: KeysCollection = "points", mask_key: str = "fg_mask", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        fg = convert_to_numpy(d[self.mask_key], wrap_sequence=True)
        fg = fg[0] if fg.ndim == 3 else fg
        for key in self.key_iterator(d):
            point_map = d[key]
            arr = convert_to_numpy(point_map, wrap_sequence=True)
            if arr.shape[-2:] != fg.shape:
                raise ValueError(f"{key} {arr.shape} and {self.mask_key} {fg.shape} differ in size")
            points, ids = map_to_points(arr)
            new = cut_off_points(fg, points)
            if len(new) == 0:
                continue
            start = int(ids.max()) + 1 if len(ids) else 1
            added = points_to_map(new, fg.shape, np.arange(start, start + len(new)))
            out = np.where(added > 0, added, arr.reshape(fg.shape)).astype(arr.dtype).reshape(arr.shape)
            if isinstance(point_map, torch.Tensor):
                out = torch.as_tensor(out, device=point_map.device)
                if isinstance(point_map, MetaTensor):
                    out = MetaTensor(out, meta=point_map.meta, applied_operations=point_map.applied_operations)
            d[key] = out
        return d


class ThresholdMask(Transform):
    """Image (C, H, W) → (1, H, W) uint8 foreground mask of one channel (:func:`threshold_mask`, Otsu by default).

    Args:
        channel: channel index, -1 = mean of all channels.
        threshold: absolute threshold, None = Otsu.
    """

    def __init__(self, channel: int = -1, threshold: float | None = None) -> None:
        self.channel = channel
        self.threshold = threshold

    def __call__(self, image: Any) -> MetaTensor:
        img = convert_to_numpy(image, wrap_sequence=True).astype(np.float32)
        if img.ndim == 2:
            img = img[None]
        chan = img.mean(axis=0) if self.channel == -1 else img[self.channel]
        return _meta_like(image, threshold_mask(chan, self.threshold)[None])


class ForegroundMaskd(MapTransform):
    """Image-level foreground mask (1, H, W) uint8 in ``data[mask_key]`` from the configured source.

    Args:
        source: "labels" (``data[label_key] > 0``), "threshold" (:class:`ThresholdMask` of ``data[image_key]``) or
            "files" (``weak/masks/<id>.*`` under ``dataset_dir``, :func:`read_weak_mask`).
        mask_key, label_key, image_key: data keys.
        channel, threshold: see :class:`ThresholdMask`.
        dataset_dir: dataset folder (source "files").

    Raises:
        DataError: a mask file that is missing or whose size differs from the image (names the file).
    """

    def __init__(
        self,
        source: str = "labels",
        mask_key: str = "fg_mask",
        label_key: str = "label",
        image_key: str = "image",
        channel: int = -1,
        threshold: float | None = None,
        dataset_dir: str | None = None,
    ) -> None:
        if source not in MASK_SOURCES:
            raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {source!r}")
        if source == "files" and dataset_dir is None:
            raise ValueError("mask source 'files' needs dataset_dir")
        super().__init__(label_key if source == "labels" else image_key)
        self.source = source
        self.mask_key, self.label_key, self.image_key = mask_key, label_key, image_key
        self.thresholder = ThresholdMask(channel, threshold)
        self.dataset_dir = dataset_dir

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.source == "labels":
            lab = d[self.label_key]
            d[self.mask_key] = _meta_like(lab, (convert_to_numpy(lab, wrap_sequence=True) > 0).astype(np.uint8))
        elif self.source == "threshold":
            d[self.mask_key] = self.thresholder(d[self.image_key])
        else:
            image = d[self.image_key]
            mask = read_weak_mask(self.dataset_dir, str(d.get("id")))
            if mask.shape != tuple(image.shape[-2:]):
                raise DataError(
                    f"{self.dataset_dir}/weak/masks/{d.get('id')}.*: mask is {mask.shape} but the image is "
                    f"{tuple(image.shape[-2:])} (H, W)"
                )
            d[self.mask_key] = _meta_like(image, mask[None])
        return d
