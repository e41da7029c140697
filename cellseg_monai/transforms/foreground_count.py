"""Foreground-mask + count weak labels as transforms, and splitting a stitched instance output.

The weak label of the canonical-shape method (Costa et al., MIDL 2022) is a patch's foreground mask and its number
of nuclei K. :class:`ForegroundCountd` derives both from full instance labels *after* the random crop, so K counts
the nuclei of the patch the network sees (:func:`cellseg_monai.annotations.simulate_foreground_count`: an instance
with at least one pixel in the patch counts). The full labels are then deleted by the config, so the training
iteration only ever sees the weak label.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from cellseg_monai.annotations.foreground_count import simulate_foreground_count

__all__ = ["ForegroundCount", "ForegroundCountd", "SplitInstanceOutputd"]


class ForegroundCount(Transform):
    """(1, H, W) instance labels → ((1, H, W) float32 foreground mask in {0, 1}, (1,) float32 count K)."""

    def __call__(self, labels: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if labels.ndim != 3 or labels.shape[0] != 1:
            raise ValueError(f"ForegroundCount expects (1, H, W) instance labels; got shape {tuple(labels.shape)}.")
        mask, count = simulate_foreground_count(labels)
        out = torch.as_tensor(mask[None].astype(np.float32))
        if isinstance(labels, MetaTensor):
            out = MetaTensor(out, meta=dict(labels.meta))
        return out, torch.tensor([float(count)])


class ForegroundCountd(MapTransform):
    """Dictionary wrapper of :class:`ForegroundCount`: ``data[mask_key]``, ``data[count_key]`` from ``data[key]``.

    Args:
        keys: key of the (1, H, W) instance labels (one key).
        mask_key: where to write the (1, H, W) foreground mask.
        count_key: where to write the (1,) count.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        mask_key: str = "mask",
        count_key: str = "count",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"ForegroundCountd reads one label key; got {self.keys}.")
        self.mask_key, self.count_key = mask_key, count_key
        self.converter = ForegroundCount()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.mask_key], d[self.count_key] = self.converter(d[key])
        return d


class SplitInstanceOutputd(MapTransform):
    """Split a stitched (2 + F, H, W) instance output into labels, score map and attributes.

    :class:`~cellseg_monai.inferers.TiledInstanceInferer` returns channel 0 labels, channel 1 score, channels 2..
    attributes. This writes ``data[key]`` = (1, H, W) int32 labels (in place), ``data[score_key]`` = (1, H, W)
    float32, ``data[foreground_key]`` = (1, H, W) float32 in {0, 1} (labels > 0, what pixel metrics read) and,
    when F > 0 and ``attributes_key`` is set, ``data[attributes_key]`` = (F, H, W) float32. Metadata of the input
    (a MetaTensor) is kept on every output; None for an output key skips that output.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        score_key: str | None = "score",
        attributes_key: str | None = "attributes",
        foreground_key: str | None = "fg",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.score_key, self.attributes_key, self.foreground_key = score_key, attributes_key, foreground_key

    @staticmethod
    def _like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return MetaTensor(x, meta=dict(ref.meta)) if isinstance(ref, MetaTensor) else x

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            out = d[key]
            if out.ndim != 3 or out.shape[0] < 2:
                raise ValueError(
                    f"data[{key!r}] must be (2 + F, H, W) labels, score, attributes; got {tuple(out.shape)}."
                )
            plain = (out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)).detach()
            d[key] = self._like(plain[:1].round().to(torch.int32), out)
            if self.score_key is not None:
                d[self.score_key] = self._like(plain[1:2].float(), out)
            if self.foreground_key is not None:
                d[self.foreground_key] = self._like((plain[:1] > 0.5).float(), out)
            if self.attributes_key is not None and out.shape[0] > 2:
                d[self.attributes_key] = self._like(plain[2:].float(), out)
        return d
