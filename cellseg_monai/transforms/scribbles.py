"""Scribble transforms: simulated ImPartial scribbles from loaded instance labels, or the user's own scribbles.

Place ``SimulateScribblesd`` right after loading, before any random transform: the scribbles are a deterministic
function of (image id, seed, budget) only when they are drawn on the full, untransformed label image (a budget
redrawn on each random crop would leak the full labels over the epochs).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy

from cellseg_monai.annotations.scribbles import simulate_scribbles
from cellseg_monai.data.io import DataError

__all__ = ["SimulateScribbles", "SimulateScribblesd"]


class SimulateScribbles(Transform):
    """Instance labels (1, H, W) → simulated scribbles (1, H, W) (see :func:`simulate_scribbles`).

    Args:
        budget: objects per image: an int, or a float in (0, 1] = fraction of the image's objects.
        seed: user seed; the scribbles are a function of (sample id, seed, budget).
        fov: field of view side in pixels (ImPartial: 32).
        class_map: object id → foreground class (>= 1); default class 1 (scribble value 2).
        contour_classes: classes that also get the eroded contour stroke.
        separate_touching: also draw the seams between an annotated object and the objects it touches as
            background (not in the paper's protocol; see :func:`simulate_scribbles`).

    ``__call__(label, sample_id=None)``: ``label`` is (1, H, W) or (H, W) integer instance ids; ``sample_id``
    defaults to ``label.meta["id"]``. Returns an ``int32`` (1, H, W) ``MetaTensor`` (0 unlabelled, 1 background,
    2.. classes) carrying a copy of the label's meta and affine.

    Raises:
        ValueError: no sample id (needed for determinism).
    """

    def __init__(
        self,
        budget: int | float = 0.3,
        seed: int = 0,
        fov: int = 32,
        class_map: Mapping[int, int] | None = None,
        contour_classes: Sequence[int] = (),
        separate_touching: bool = False,
    ) -> None:
        self.budget = budget
        self.seed = seed
        self.fov = fov
        self.class_map = class_map
        self.contour_classes = tuple(contour_classes)
        self.separate_touching = bool(separate_touching)

    def __call__(self, label: torch.Tensor | np.ndarray, sample_id: str | None = None) -> MetaTensor:
        meta = dict(label.meta) if isinstance(label, MetaTensor) else {}
        meta.pop("affine", None)  # passed separately below
        if sample_id is None:
            sample_id = meta.get("id")
        if sample_id is None:
            raise ValueError(
                "SimulateScribbles needs the sample id (scribbles are a function of id, seed and budget): pass "
                "sample_id or load the label with LoadMicroscopy, which sets meta['id']"
            )
        arr = convert_to_numpy(label, wrap_sequence=True)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise ValueError(f"labels must be (1, H, W) or (H, W), got shape {tuple(label.shape)}")
        scr = simulate_scribbles(
            arr,
            str(sample_id),
            seed=self.seed,
            budget=self.budget,
            fov=self.fov,
            class_map=self.class_map,
            contour_classes=self.contour_classes,
            separate_touching=self.separate_touching,
        )
        data = torch.as_tensor(scr.astype(np.int32)[None])
        affine = label.affine.clone() if isinstance(label, MetaTensor) else torch.eye(3, dtype=torch.float64)
        meta["id"] = str(sample_id)
        return MetaTensor(data, affine=affine, meta=meta)


class SimulateScribblesd(MapTransform):
    """Dictionary wrapper of :class:`SimulateScribbles`: writes ``data[scribble_key]``.

    If ``data[scribble_key]`` already holds the user's scribbles, they are kept: an array/tensor is kept as is
    (a 2D one gets a channel axis), a path is loaded with ``LoadMicroscopy("scribble")``; its height and width
    must match the label's (or, for an image the user only scribbled, with no label, the ``ref_key`` image's).
    Otherwise scribbles are simulated from the loaded label under ``keys``, with the sample id taken from
    ``data[id_key]`` or ``label.meta["id"]``.

    Args:
        keys: the key of the loaded instance labels (one key).
        scribble_key: where the scribbles go (and where user scribbles are looked for).
        budget, seed, fov, class_map, contour_classes, separate_touching: see :class:`SimulateScribbles`.
        id_key: key of the sample id in the data dict.
        ref_key: key of the image that user scribbles of an unlabelled sample must match in height and width.
        allow_missing_keys: skip a sample with neither label nor scribbles (otherwise an error).

    Raises:
        DataError: user scribbles whose height and width differ from the label's or the image's (names the
            files); a sample with neither label nor scribbles.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        scribble_key: Hashable = "scribble",
        budget: int | float = 0.3,
        seed: int = 0,
        fov: int = 32,
        class_map: Mapping[int, int] | None = None,
        contour_classes: Sequence[int] = (),
        id_key: Hashable = "id",
        ref_key: Hashable | None = "image",
        allow_missing_keys: bool = False,
        separate_touching: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SimulateScribblesd takes one label key, got {self.keys}")
        self.scribble_key = scribble_key
        self.id_key = id_key
        self.ref_key = ref_key
        self.simulator = SimulateScribbles(budget, seed, fov, class_map, contour_classes, separate_touching)

    @staticmethod
    def _user(user: Any) -> Any:
        if isinstance(user, (str, os.PathLike)):
            from cellseg_monai.transforms.io import LoadMicroscopy

            return LoadMicroscopy("scribble")(user)
        if isinstance(user, (np.ndarray, torch.Tensor)) and user.ndim == 2:
            return user[None]
        return user

    @staticmethod
    def _check_size(user: Any, ref: Any, what: str, ref_name: Hashable, scribble_key: Hashable) -> None:
        if tuple(user.shape[-2:]) != tuple(ref.shape[-2:]):
            src = getattr(user, "meta", {}).get("filename_or_obj", scribble_key)
            rsrc = getattr(ref, "meta", {}).get("filename_or_obj", ref_name)
            raise DataError(
                f"{src}: scribbles have height x width {tuple(user.shape[-2:])} but {what} {rsrc} have "
                f"{tuple(ref.shape[-2:])}"
            )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        (key,) = self.keys
        user = d.get(self.scribble_key)
        if key not in d:  # an image the user only scribbled
            if user is None:
                if self.allow_missing_keys:
                    return d
                raise DataError(f"sample {d.get(self.id_key)!r}: has neither labels ({key!r}) nor scribbles")
            user = self._user(user)
            if self.ref_key is not None and self.ref_key in d:
                self._check_size(user, d[self.ref_key], "the image", self.ref_key, self.scribble_key)
            d[self.scribble_key] = user
            return d
        label = d[key]
        if user is None:
            d[self.scribble_key] = self.simulator(label, d.get(self.id_key))
            return d
        user = self._user(user)
        self._check_size(user, label, "labels", key, self.scribble_key)
        d[self.scribble_key] = user
        return d
