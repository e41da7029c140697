"""Partial-label transforms: keep a seeded fraction of the loaded instance labels (Feng et al.'s exemplars).

Place ``KeepFractiond`` right after loading, before any random transform: the kept nuclei are a deterministic
function of (image id, seed, fraction) only on the full, untransformed label image.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy

from cellseg_monai.annotations.partial import keep_fraction

__all__ = ["KeepFraction", "KeepFractiond"]


class KeepFraction(Transform):
    """Instance labels (1, H, W) → partial labels (1, H, W) keeping ``fraction`` of the instances.

    Args:
        fraction: fraction of the instances kept, in (0, 1] (1.0 = all); see
            :func:`cellseg_monai.annotations.partial.kept_ids` for the rounding (ceil, at least one).
        seed: user seed; the kept instances are a function of (sample id, seed, fraction).

    ``__call__(label, sample_id=None)``: ``label`` is (1, H, W) or (H, W) integer ids; ``sample_id`` defaults to
    ``label.meta["id"]`` (required unless ``fraction`` is 1.0). Returns a tensor of the input's shape and dtype
    (a MetaTensor keeps its meta).

    Raises:
        ValueError: no sample id, or labels that are not 2D.
    """

    def __init__(self, fraction: float = 0.25, seed: int = 0) -> None:
        if isinstance(fraction, bool) or not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)
        self.seed = int(seed)

    def __call__(self, label: torch.Tensor | np.ndarray, sample_id: str | None = None) -> torch.Tensor:
        if self.fraction >= 1.0:
            return label if isinstance(label, torch.Tensor) else torch.as_tensor(label)
        if sample_id is None and isinstance(label, MetaTensor):
            sample_id = label.meta.get("id")
        if sample_id is None:
            raise ValueError(
                "KeepFraction needs the sample id (the kept instances are a function of id, seed and fraction): "
                "pass sample_id or load the label with LoadMicroscopy, which sets meta['id']"
            )
        arr = convert_to_numpy(label, wrap_sequence=True)
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[0] != 1):
            raise ValueError(f"labels must be (1, H, W) or (H, W), got shape {tuple(arr.shape)}")
        out = torch.as_tensor(keep_fraction(arr, str(sample_id), seed=self.seed, fraction=self.fraction))
        if isinstance(label, MetaTensor):
            meta = {k: v for k, v in label.meta.items() if k != "affine"}
            return MetaTensor(out, affine=label.affine.clone(), meta=meta)
        return out.to(label.device) if isinstance(label, torch.Tensor) else out


class KeepFractiond(MapTransform):
    """Dictionary wrapper of :class:`KeepFraction`: replaces ``data[key]`` by its partial labels.

    Args:
        keys: key(s) of loaded (1, H, W) instance labels.
        fraction, seed: see :class:`KeepFraction`.
        id_key: key of the sample id in the data dict (else ``label.meta["id"]`` is used).
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        fraction: float = 0.25,
        seed: int = 0,
        id_key: Hashable = "id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.id_key = id_key
        self.keeper = KeepFraction(fraction, seed)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.keeper(d[key], d.get(self.id_key))
        return d
