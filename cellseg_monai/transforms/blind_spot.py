"""Noise2Void blind-spot masking for ImPartial's self-supervised reconstruction loss.

Krull, Buchholz, Jug, "Noise2Void - Learning Denoising from Single Noisy Images", CVPR 2019 (the masking
scheme); used by ImPartial (Martinez et al., bioRxiv 2021.01.20.427458, Eq. 1): a few pixels of the input are
replaced by the value of a random neighbour, and the network must predict their ORIGINAL values from the
context, which it cannot copy.

Reference code (nadeemlab/ImPartial ``dataprocessing/dataloaders.py``): 5 % of the pixels (``ratio=0.95``),
neighbour offset drawn in a 10×10 window with periodic wrap-around and (0, 0) allowed. Here: pixels are drawn
without repetition, the neighbour is drawn uniformly among the OTHER pixels of the (2r+1)² window clipped to the
image (never the pixel itself, no wrap-around), and all channels take the same neighbour.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform

__all__ = ["BlindSpot", "BlindSpotd", "sample_blind_spots"]


def sample_blind_spots(
    shape: tuple[int, int], fraction: float, radius: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Draw blind-spot pixels and, for each, a source neighbour.

    Args:
        shape: (H, W), with H*W ≥ 2.
        fraction: share of pixels to mask; ``max(1, round(fraction*H*W))`` distinct pixels are drawn.
        radius: r ≥ 1; the source lies in the (2r+1)² window around the pixel, clipped to the image, ≠ the pixel.
        rng: random state.

    Returns:
        ``targets`` and ``sources``, each ``(N, 2)`` int64 (row, col) arrays.
    """
    h, w = int(shape[0]), int(shape[1])
    if h * w < 2:
        raise ValueError(f"blind-spot masking needs an image of at least 2 pixels; got spatial shape {(h, w)}.")
    n = min(h * w, max(1, int(round(fraction * h * w))))
    flat = rng.choice(h * w, size=n, replace=False)
    ty, tx = flat // w, flat % w
    y0, y1 = np.maximum(ty - radius, 0), np.minimum(ty + radius, h - 1)
    x0, x1 = np.maximum(tx - radius, 0), np.minimum(tx + radius, w - 1)
    ny, nx = y1 - y0 + 1, x1 - x0 + 1
    # uniform over the window minus the pixel itself: draw in [0, ny*nx - 1) and skip the pixel's own index
    own = (ty - y0) * nx + (tx - x0)
    draw = np.floor(rng.random_sample(n) * (ny * nx - 1)).astype(np.int64)
    draw = np.minimum(draw, ny * nx - 2)  # guard the float edge case random_sample → 1.0
    draw = draw + (draw >= own)
    sy, sx = y0 + draw // nx, x0 + draw % nx
    targets = np.stack([ty, tx], axis=1).astype(np.int64)
    sources = np.stack([sy, sx], axis=1).astype(np.int64)
    return targets, sources


class BlindSpot(Randomizable, Transform):
    """Noise2Void masking of a channel-first image ``(C, H, W)``.

    Picks ``max(1, round(fraction*H*W))`` distinct pixels and replaces each (all channels) by the value of a
    random other pixel within ``radius`` (Chebyshev distance, clipped to the image). Values are copied from the
    original image, so a masked pixel never receives another masked pixel's replacement.

    Args:
        fraction: share of pixels to mask, in (0, 1]. Default 0.01 (our choice; the reference code masks 5 %).
        radius: neighbourhood radius r ≥ 1 of the (2r+1)² window. Default 2 (Noise2Void's 5×5 window; the
            reference code uses a 10×10 window).

    ``__call__(img, randomize=True)`` returns ``(masked_image, mask)``: ``masked_image`` of the input's type and
    shape, ``mask`` ``(1, H, W)`` float32 (same array type as the input) with 1 at the masked pixels.
    Seed with ``set_random_state`` for a reproducible pipeline.
    """

    def __init__(self, fraction: float = 0.01, radius: int = 2) -> None:
        if not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"fraction must be in (0, 1]; got {fraction}.")
        if int(radius) != radius or int(radius) < 1:
            raise ValueError(f"radius must be an integer >= 1; got {radius}.")
        self.fraction = float(fraction)
        self.radius = int(radius)
        self._targets: np.ndarray | None = None
        self._sources: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None

    def randomize(self, data: tuple[int, int]) -> None:
        """Draw blind spots for spatial shape ``data`` = (H, W)."""
        self._shape = (int(data[0]), int(data[1]))
        self._targets, self._sources = sample_blind_spots(self._shape, self.fraction, self.radius, self.R)

    def __call__(self, img: Any, randomize: bool = True) -> tuple[Any, Any]:
        if not isinstance(img, (np.ndarray, torch.Tensor)):
            raise TypeError(f"BlindSpot expects a numpy array or torch tensor (C, H, W); got {type(img).__name__}.")
        if img.ndim != 3:
            raise ValueError(f"BlindSpot expects a channel-first image (C, H, W); got shape {tuple(img.shape)}.")
        shape = (int(img.shape[-2]), int(img.shape[-1]))
        if randomize or self._targets is None:
            self.randomize(shape)
        elif self._shape != shape:
            raise ValueError(f"randomize=False but the last draw was for shape {self._shape}, not {shape}.")
        ty, tx = self._targets[:, 0], self._targets[:, 1]
        sy, sx = self._sources[:, 0], self._sources[:, 1]
        if isinstance(img, torch.Tensor):
            out = img.clone()
            out[:, torch.as_tensor(ty), torch.as_tensor(tx)] = img[:, torch.as_tensor(sy), torch.as_tensor(sx)]
            mask = torch.zeros((1, *shape), dtype=torch.float32, device=img.device)
            mask[0, torch.as_tensor(ty), torch.as_tensor(tx)] = 1.0
            return out, mask
        out = img.copy()
        out[:, ty, tx] = img[:, sy, sx]
        mask_np = np.zeros((1, *shape), dtype=np.float32)
        mask_np[0, ty, tx] = 1.0
        return out, mask_np


class BlindSpotd(Randomizable, MapTransform):
    """Dictionary wrapper of :class:`BlindSpot`.

    Reads the image ``(C, H, W)`` under ``keys`` (exactly one key), leaves it unchanged (the reconstruction
    target), and writes the masked copy under ``output_key`` and the mask ``(1, H, W)`` under ``mask_key``.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        output_key: str = "masked_image",
        mask_key: str = "blind_mask",
        fraction: float = 0.01,
        radius: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"BlindSpotd takes exactly one image key; got {self.keys}.")
        self.output_key = output_key
        self.mask_key = mask_key
        self.blind_spot = BlindSpot(fraction=fraction, radius=radius)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> BlindSpotd:
        super().set_random_state(seed, state)
        self.blind_spot.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Randomness is drawn by the wrapped :class:`BlindSpot` at call time."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key], d[self.mask_key] = self.blind_spot(d[key])
        return d
