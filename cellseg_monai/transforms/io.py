"""Loading transforms: a file path → a channel-first MONAI ``MetaTensor`` with the data contract's meta keys.

``LoadMicroscopy`` reads one path (image, instance labels or user scribbles); ``LoadMicroscopyd`` wraps it for
data dicts and checks that a label has the same height and width as the image it belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple_rep

from cellseg_monai.data.io import DataError, read_image, read_labels

__all__ = ["KINDS", "LoadMicroscopy", "LoadMicroscopyd", "match_channels"]

KINDS: tuple[str, ...] = ("image", "label", "scribble")
"""What a path holds: a raw image, instance labels (file or DSB ``masks/`` folder), or a user scribble image."""


def match_channels(image: np.ndarray, channels: int | None, source: str | os.PathLike = "<array>") -> np.ndarray:
    """Convert a (C, H, W) image to ``channels`` channels.

    Rules: ``None`` keeps C; RGBA (C = 4) drops alpha first; 1 from 3 → mean of the channels (grey); 3 from 1 → the
    grey channel repeated. Any other mismatch raises.

    Args:
        image: (C, H, W) array.
        channels: wanted channel count, or None.
        source: file name used in error messages.

    Raises:
        DataError: the channel count cannot be converted.
    """
    if channels is None:
        return image
    c = image.shape[0]
    if c == 4 and channels != 4:
        image, c = image[:3], 3
    if c == channels:
        return image
    if channels == 1 and c == 3:
        return image.mean(axis=0, keepdims=True, dtype=np.float32)
    if channels == 3 and c == 1:
        return np.repeat(image, 3, axis=0)
    raise DataError(f"{source}: image has {c} channel(s), cannot convert to the {channels} channel(s) asked for")


class LoadMicroscopy(Transform):
    """Load a path as a channel-first ``MetaTensor``.

    Args:
        kind: "image" → (C, H, W) ``float32`` with the file's values (not normalised; grey images get C = 1);
            "label" → (1, H, W) ``int32`` instance ids (``int64`` above 2**31 - 1), from a label file or a DSB
            ``masks/`` folder; "scribble" → (1, H, W) ``int32`` scribble image (0 unlabelled, 1 background,
            2.. foreground classes), validated by :func:`cellseg_monai.annotations.scribbles.read_scribbles`.
        channels: images only; see :func:`match_channels`.

    Returns (``__call__``): ``MetaTensor`` whose meta has "filename_or_obj" (the path), "id" (the file stem, or the
    folder's parent for a DSB ``masks/`` folder), "spatial_shape" (H, W) and an identity 2D ``affine`` (3 × 3).
    An input that is already a tensor or array with 3 dims is returned unchanged (already loaded).

    Raises:
        DataError: unreadable file or channel mismatch, always naming the file.
    """

    def __init__(self, kind: str = "image", channels: int | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if channels is not None and (kind != "image" or channels not in (1, 3, 4)):
            raise ValueError(f"channels must be None, or 1, 3 or 4 for kind='image'; got {channels} for {kind!r}")
        self.kind = kind
        self.channels = channels

    def __call__(self, path: str | os.PathLike | torch.Tensor | np.ndarray) -> MetaTensor | torch.Tensor | np.ndarray:
        if isinstance(path, (torch.Tensor, np.ndarray)):
            if path.ndim != 3:
                raise TypeError(
                    f"LoadMicroscopy: already-loaded data must be channel-first (C, H, W), got {path.shape}"
                )
            return path
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"LoadMicroscopy expects a file path, got {type(path).__name__}")
        p = Path(path)
        if self.kind == "image":
            arr = read_image(p)
            arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
            arr = match_channels(arr, self.channels, p)
            data = torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float32))
        else:
            if self.kind == "label":
                lab = read_labels(p)
            else:
                from cellseg_monai.annotations.scribbles import read_scribbles

                lab = read_scribbles(p)
            data = torch.as_tensor(np.ascontiguousarray(lab[None]))
        sid = p.parent.name if (p.is_dir() and p.name == "masks") else p.stem
        meta = {
            "filename_or_obj": str(p),
            "id": sid,
            "spatial_shape": np.asarray(data.shape[1:]),
            "original_channel_dim": 0,
        }
        return MetaTensor(data, affine=torch.eye(3, dtype=torch.float64), meta=meta)


def _source(x: Any) -> str:
    """File name of a loaded item (meta "filename_or_obj") or the item itself when it is a path."""
    meta = getattr(x, "meta", None)
    if isinstance(meta, Mapping) and "filename_or_obj" in meta:
        return str(meta["filename_or_obj"])
    return str(x) if isinstance(x, (str, os.PathLike)) else "<array>"


class LoadMicroscopyd(MapTransform):
    """Dictionary wrapper of :class:`LoadMicroscopy`.

    Args:
        keys: keys of the paths to load.
        kind: "image", "label" or "scribble", one for all keys or one per key.
        channels: images only, see :func:`match_channels`.
        ref_key: key of an already-loaded item (e.g. "image") whose height and width every loaded key must match.
        require_objects: for kind "label", raise when all labels are 0 ("empty labels").
        allow_missing_keys: skip keys absent from the dict (e.g. an optional "scribble").

    When the dict has a string "id" (datalists do), it becomes ``meta["id"]`` of every loaded item.

    Raises:
        DataError: shape mismatch with ``ref_key`` (names both files and both shapes), empty labels when
            ``require_objects``, or any loading error.
    """

    def __init__(
        self,
        keys: KeysCollection,
        kind: str | Sequence[str] = "image",
        channels: int | None = None,
        ref_key: Hashable | None = None,
        require_objects: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        kinds = ensure_tuple_rep(kind, len(self.keys))
        self.loaders = [LoadMicroscopy(k, channels if k == "image" else None) for k in kinds]
        self.ref_key = ref_key
        self.require_objects = require_objects

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, loader in self.key_iterator(d, self.loaders):
            src = _source(d[key])
            item = loader(d[key])
            if self.ref_key is not None and self.ref_key != key:
                if self.ref_key not in d:
                    raise KeyError(f"LoadMicroscopyd: ref_key {self.ref_key!r} is not in the data dict")
                ref = d[self.ref_key]
                if tuple(ref.shape[-2:]) != tuple(item.shape[-2:]):
                    raise DataError(
                        f"{src}: {key} has height x width {tuple(item.shape[-2:])} but {self.ref_key} "
                        f"{_source(ref)} has {tuple(ref.shape[-2:])}"
                    )
            if self.require_objects and loader.kind == "label" and not bool((item != 0).any()):
                raise DataError(f"{src}: empty labels (no object, all pixels are 0)")
            if isinstance(item, MetaTensor) and isinstance(d.get("id"), str):
                item.meta["id"] = d["id"]  # the datalist id wins (Cellpose "<name>_masks" files, DSB masks/)
            d[key] = item
        return d
