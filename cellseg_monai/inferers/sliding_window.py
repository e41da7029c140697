"""Sliding-window inference whose tiles fit the image: as few, as large and as evenly sized tiles as the image needs.

MONAI's :class:`~monai.inferers.SlidingWindowInferer` uses one fixed ``roi_size`` and a *relative* overlap: a
1024² image with 256² tiles at overlap 0.25 runs 25 tiles (1.6× the image's pixels), a 256×320 image is padded to
two 256² tiles, and a 1×2000 image is padded to 256 rows (~250× its pixels). :class:`FittedSlidingWindowInferer`
chooses the tiles per image instead, per spatial dimension of size ``s``:

- ``n`` tiles, the fewest whose size does not exceed ``roi_size`` with neighbours overlapping by ``overlap_px``
  pixels (``overlap × roi_size``): ``n = 1`` when ``s ≤ roi``, else ``ceil((s - o) / (roi - o))``;
- tile side ``t = min(roi, round_up(ceil((s + (n - 1)·o) / n), divisible_by))``: tiles share the image evenly, and
  a dimension smaller than a tile is padded only to a multiple of ``divisible_by`` (the network's total stride).

Then MONAI's :func:`~monai.inferers.sliding_window_inference` runs with that tile and the overlap ``o / t`` (its
stitching, blending and padding are MONAI's). Executed pixels ÷ image pixels stays near ``1 + o / t`` for any image
size (1.13 for a 1024² image at ``roi_size`` 512, ``overlap`` 0.125), which keeps seconds per megapixel flat from
small to large images and stops thin images from costing hundreds of times their pixels.

An image that fits one tile (every image up to ``roi_size``) skips the window machinery: the network runs on the
image padded as MONAI pads it and the output is cropped back — the same values without MONAI's blending buffers,
importance map and division (several full-size passes over the output).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer, sliding_window_inference
from monai.utils import PytorchPadMode, convert_to_dst_type, look_up_option

__all__ = ["FittedSlidingWindowInferer", "fitted_tiles"]


def fitted_tiles(size: int, roi: int, overlap_px: int, divisible_by: int = 1) -> tuple[int, int]:
    """``(tile side, number of tiles)`` along one dimension of ``size`` pixels (see the module docstring).

    Args:
        size: the image's size along the dimension (≥ 1).
        roi: the largest tile side (≥ 1).
        overlap_px: pixels shared by neighbouring tiles, ``0 ≤ overlap_px < roi``.
        divisible_by: the tile side is a multiple of this (the network's total stride), ≥ 1.

    Example:
        >>> fitted_tiles(4096, 1024, 64, 16), fitted_tiles(1024, 512, 64, 16), fitted_tiles(300, 512, 64, 16), fitted_tiles(1, 512, 64, 16)
        ((880, 5), (384, 3), (304, 1), (16, 1))
    """
    if size < 1 or roi < 1 or divisible_by < 1 or not 0 <= overlap_px < roi:
        raise ValueError(
            f"need size >= 1, roi >= 1, divisible_by >= 1 and 0 <= overlap_px < roi; got size={size}, roi={roi}, "
            f"overlap_px={overlap_px}, divisible_by={divisible_by}."
        )
    n = 1 if size <= roi else math.ceil((size - overlap_px) / (roi - overlap_px))
    side = math.ceil((size + (n - 1) * overlap_px) / n)
    side = divisible_by * math.ceil(side / divisible_by)
    if side > roi and n > 1:  # rounding up pushed the tile over roi: the largest multiple that fits (one more tile)
        side = max(divisible_by * (roi // divisible_by), divisible_by)
        n = math.ceil((size - overlap_px) / (side - overlap_px)) if side > overlap_px else n + 1
    return side, n


class FittedSlidingWindowInferer(Inferer):
    """Sliding-window inference with tiles fitted to each image (module docstring), blended by MONAI.

    Args:
        roi_size: the largest tile, (h, w) or one int for both.
        overlap: overlap of neighbouring tiles as a fraction of ``roi_size`` (so a fixed number of pixels,
            whatever the fitted tile), in [0, 1).
        divisible_by: tile sides are multiples of this (e.g. 2**depth of a U-Net); small images are padded to it.
        min_tile: no tile side below this (rounded up to ``divisible_by``): a network whose deepest level normalises
            over space (instance norm) needs more than one pixel there, e.g. 32 for a depth-4 U-Net.
        sw_batch_size: tiles per network call.
        mode, sigma_scale, padding_mode, cval: as MONAI's :func:`~monai.inferers.sliding_window_inference`.

    ``inferer(inputs (B, C, *spatial), network)`` → what MONAI's sliding-window inference returns for the fitted
    tiles (a tensor, tuple or dict of (B, C', *spatial)).
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        overlap: float = 0.125,
        divisible_by: int = 16,
        sw_batch_size: int = 1,
        min_tile: int = 1,
        mode: str = "gaussian",
        sigma_scale: float = 0.125,
        padding_mode: str = "constant",
        cval: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap must be in [0, 1); got {overlap!r}.")
        if int(divisible_by) < 1 or int(sw_batch_size) < 1:
            raise ValueError(f"divisible_by and sw_batch_size must be >= 1; got {divisible_by}, {sw_batch_size}.")
        self.roi_size = roi_size
        self.overlap = float(overlap)
        self.divisible_by = int(divisible_by)
        self.min_tile = max(1, int(min_tile))
        self.sw_batch_size = int(sw_batch_size)
        self.mode = mode
        self.sigma_scale = sigma_scale
        self.padding_mode = padding_mode
        self.cval = cval

    def tiles(self, spatial: Sequence[int]) -> tuple[list[int], list[float], list[int]]:
        """``(tile sides, relative overlaps, tile counts)`` for an image of ``spatial`` size."""
        rois = (
            [int(self.roi_size)] * len(spatial) if isinstance(self.roi_size, int) else [int(r) for r in self.roi_size]
        )
        if len(rois) != len(spatial) or min(rois) < 1:
            raise ValueError(f"roi_size {self.roi_size!r} does not fit an image of spatial size {tuple(spatial)}.")
        sides, overlaps, counts = [], [], []
        for size, roi in zip(spatial, rois, strict=True):
            overlap_px = min(int(round(self.overlap * roi)), roi - 1)
            side, n = fitted_tiles(int(size), roi, overlap_px, self.divisible_by)
            if n == 1:  # only an image smaller than min_tile is padded further
                side = max(side, self.divisible_by * math.ceil(min(self.min_tile, roi) / self.divisible_by))
            sides.append(side)
            counts.append(n)
            # MONAI steps by int(side · (1 - overlap)): the stride that lands n tiles on the image
            # (+ 0.5: int() of the product must not round the stride down by a float error and add a tile)
            stride = side if n == 1 else max(1, math.ceil((int(size) - side) / (n - 1)))
            overlaps.append(min(max(1.0 - (stride + 0.5) / side, 0.0), 0.99))
        return sides, overlaps, counts

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError("FittedSlidingWindowInferer passes keyword arguments only to the network.")
        sides, overlaps, counts = self.tiles(inputs.shape[2:])
        if all(n == 1 for n in counts) and not kwargs:
            out = self._one_tile(inputs, sides, network)
            if out is not None:
                return out
        return sliding_window_inference(
            inputs,
            roi_size=sides,
            sw_batch_size=self.sw_batch_size,
            predictor=network,
            overlap=overlaps,
            mode=self.mode,
            sigma_scale=self.sigma_scale,
            padding_mode=self.padding_mode,
            cval=self.cval,
            **kwargs,
        )

    def _one_tile(self, inputs: torch.Tensor, sides: Sequence[int], network: Callable[..., Any]) -> Any:
        """The network on the whole image padded to ``sides`` (MONAI's padding), cropped back; a tensor (a
        MetaTensor with the input's metadata for a MetaTensor input), or None when the network's output is not one
        tensor of the padded input's spatial size (MONAI's path then runs the network again and handles it)."""
        meta = MetaTensor([]).copy_meta_from(inputs, copy_attr=False) if isinstance(inputs, MetaTensor) else None
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        pad: list[int] = []  # last spatial dimension first, as F.pad wants it
        for k in range(x.ndim - 1, 1, -1):
            diff = max(int(sides[k - 2]) - x.shape[k], 0)
            pad.extend([diff // 2, diff - diff // 2])
        if any(pad):
            x = F.pad(x, pad=pad, mode=look_up_option(self.padding_mode, PytorchPadMode), value=self.cval)
        parts = [network(x[i : i + self.sw_batch_size]) for i in range(0, x.shape[0], self.sw_batch_size)]
        if not all(isinstance(p, torch.Tensor) and p.shape[2:] == x.shape[2:] for p in parts):
            return None
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        spatial = out.ndim - 2
        crop = [
            slice(pad[2 * (spatial - 1 - d)], pad[2 * (spatial - 1 - d)] + inputs.shape[2 + d]) for d in range(spatial)
        ]
        out = out[(slice(None), slice(None), *crop)]
        return convert_to_dst_type(out, meta if meta is not None else inputs, device=inputs.device)[0]
