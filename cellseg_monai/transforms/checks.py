"""Checks of loaded data that stop a training at the file that is wrong, instead of many iterations later.

An image with NaN or infinite pixels (a float TIFF with masked-out regions, a failed export) turns every percentile
normalisation, loss and gradient it reaches into NaN; the training then fails far away ("prob contains NaN values"
in validation post-processing) or silently learns nothing.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from cellseg_monai.data.io import DataError
from cellseg_monai.transforms.io import _source

__all__ = ["RequireFinite", "RequireFinited"]


class RequireFinite(Transform):
    """Pass an array through unchanged, or raise when it holds NaN or infinite values.

    Args (``__call__``):
        img: any array or tensor, e.g. a (C, H, W) ``MetaTensor`` from ``LoadMicroscopy``; integer data always
            passes.

    Raises:
        DataError: naming the file (meta ``"filename_or_obj"``) and how many values are not finite.
    """

    def __call__(self, img: Any) -> Any:
        data = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
        if not (data.is_floating_point() or data.is_complex()):
            return img
        bad = int((~torch.isfinite(data)).sum())
        if bad:
            raise DataError(
                f"{_source(img)}: image has {bad} NaN or infinite value(s) (of {data.numel()}); replace them "
                "(e.g. by 0) or leave the image out"
            )
        return img


class RequireFinited(MapTransform):
    """Dictionary wrapper of :class:`RequireFinite` for ``keys`` (e.g. ``"image"`` right after loading)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = RequireFinite()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.check(d[key])
        return d
