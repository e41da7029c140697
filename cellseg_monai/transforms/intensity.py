"""Intensity transforms for microscopy: one polarity for every image (nuclei brighter than the background)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Literal

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy

from cellseg_monai.postprocessing.classic import nuclei_are_dark

__all__ = ["NormalizePolarity", "NormalizePolarityd"]

PolarityMode = Literal["auto", "bright", "dark", "none"]


class NormalizePolarity(Transform):
    """Invert an image whose nuclei are darker than its background, so that nuclei are bright in every image.

    Fluorescence shows bright nuclei on a dark background, brightfield and H&E dark nuclei on a bright one. A
    network trained mostly on one kind learns "nucleus = bright" and segments the background of the other
    (observed with ImPartial on BBBC038's H&E images); the classic baseline handles both through the same rule.
    Each channel is mirrored within its own range: ``x -> min_c + max_c - x``.

    Args:
        polarity: "auto" — :func:`cellseg_monai.postprocessing.nuclei_are_dark` decides per image; "dark" — always
            invert; "bright" or "none" — never invert.
        smooth_sigma: smoothing (px) used by the automatic rule.

    Input (C, H, W) tensor or array, any range; output of the same type and shape. A MetaTensor records
    ``meta["polarity_inverted"]``.
    """

    def __init__(self, polarity: PolarityMode = "auto", smooth_sigma: float = 1.0) -> None:
        if polarity not in ("auto", "bright", "dark", "none"):
            raise ValueError(f"polarity must be 'auto', 'bright', 'dark' or 'none', got {polarity!r}")
        self.polarity = polarity
        self.smooth_sigma = smooth_sigma

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if img.ndim != 3:
            raise ValueError(f"NormalizePolarity expects a channel-first (C, H, W) image, got shape {tuple(img.shape)}")
        if self.polarity == "auto":
            array = convert_to_numpy(img, wrap_sequence=True)
            invert = nuclei_are_dark(array, self.smooth_sigma)
        else:
            invert = self.polarity == "dark"
        if invert:
            dims = (1, 2)
            if isinstance(img, torch.Tensor):
                img = img.amin(dim=dims, keepdim=True) + img.amax(dim=dims, keepdim=True) - img
            else:
                img = img.min(axis=dims, keepdims=True) + img.max(axis=dims, keepdims=True) - img
        if isinstance(img, MetaTensor):
            img.meta["polarity_inverted"] = bool(invert)
        return img


class NormalizePolarityd(MapTransform):
    """Dictionary wrapper of :class:`NormalizePolarity` for ``keys``."""

    def __init__(
        self,
        keys: KeysCollection = "image",
        polarity: PolarityMode = "auto",
        smooth_sigma: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = NormalizePolarity(polarity, smooth_sigma)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
