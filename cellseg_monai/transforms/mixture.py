"""Decode the raw ImPartial mixture output into class and foreground probabilities (post-processing).

Martinez et al., "ImPartial", bioRxiv 2021.01.20.427458: P(class k | x) = Σ_{j ∈ class k} π_j with π the softmax
over all mixture components. The decoding itself lives in :mod:`cellseg_monai.networks.impartial_unet`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type, convert_to_tensor

from cellseg_monai.networks.impartial_unet import check_classes, class_probabilities, num_raw_channels

__all__ = ["MixtureToProbabilities", "MixtureToProbabilitiesd"]


class MixtureToProbabilities(Transform):
    """Raw ImPartial output ``(M + M*C, H, W)`` → class probabilities ``(K, H, W)`` in [0, 1], summing to 1.

    Args:
        classes: components per class, background first (K = len(classes), M = sum(classes)).
        in_channels: C, image channels of the network input (checks the raw channel count).
        block_pixels: rows are decoded in blocks of about this many pixels, so the softmax's temporaries stay in
            cache and the time per pixel does not grow with the image; only the M logit channels are read.
    """

    def __init__(self, classes: Sequence[int] = (2, 2), in_channels: int = 1, block_pixels: int = 1 << 16) -> None:
        self.classes = check_classes(classes)
        self.in_channels = int(in_channels)
        self.raw_channels = num_raw_channels(self.classes, self.in_channels)
        self.block_pixels = max(1, int(block_pixels))

    def __call__(self, raw: Any) -> torch.Tensor:
        raw = convert_to_tensor(raw, track_meta=True)
        if raw.ndim != 3 or raw.shape[0] != self.raw_channels:
            raise ValueError(
                f"expected raw ImPartial output ({self.raw_channels}, H, W) for classes={self.classes}, "
                f"in_channels={self.in_channels}; got shape {tuple(raw.shape)}."
            )
        logits = raw.as_tensor() if isinstance(raw, MetaTensor) else raw
        logits = logits[: sum(self.classes)]
        h, w = logits.shape[1:]
        rows = max(1, self.block_pixels // max(w, 1))
        out = torch.empty((len(self.classes), h, w), dtype=torch.float32, device=logits.device)
        for r in range(0, h, rows):
            out[:, r : r + rows] = class_probabilities(logits[:, r : r + rows].float(), self.classes)
        return convert_to_dst_type(out, raw, dtype=torch.float32)[0]


class MixtureToProbabilitiesd(MapTransform):
    """Dictionary wrapper of :class:`MixtureToProbabilities`.

    Reads the raw output under ``keys`` (exactly one key), writes class probabilities ``(K, H, W)`` under
    ``output_key`` and the foreground probability 1 - P(background) ``(1, H, W)`` under ``fg_key``.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_key: str = "prob",
        fg_key: str = "fg_prob",
        classes: Sequence[int] = (2, 2),
        in_channels: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"MixtureToProbabilitiesd takes exactly one key; got {self.keys}.")
        self.output_key = output_key
        self.fg_key = fg_key
        self.converter = MixtureToProbabilities(classes=classes, in_channels=in_channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            prob = self.converter(d[key])
            d[self.output_key] = prob
            # float32 softmax sums can exceed 1 by an ulp: keep the foreground probability inside [0, 1]
            d[self.fg_key] = (1.0 - prob[:1]).clamp(0.0, 1.0)
        return d
