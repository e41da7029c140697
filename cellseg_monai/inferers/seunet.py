"""Inference of SparseSEU-Net for either of its instance decoders, on images of any size.

:class:`~cellseg_monai.networks.sparse_seunet.SparseSEUNet` gives instances two ways, and the two need different
tilings:

- ``decoder="sparse"``: the instance branch reads coordinate channels spanning its input (CoordConv), so it must see
  tiles of its training patch size; instances are stitched by tile cores
  (:class:`~cellseg_monai.inferers.tiled_instances.TiledInstanceInferer`, overlap 0.5 by default: every pixel is
  predicted about four times, plus the branch's N masks per tile);
- ``decoder="watershed"``: the instances come from the semantic heads alone (a fully convolutional SE-U-Net), which
  blend like any per-pixel output, so large tiles with a small overlap suffice
  (:class:`~cellseg_monai.inferers.sliding_window.FittedSlidingWindowInferer`), and the network skips its instance
  branch (built with ``decoder="watershed"``). On the 2-core CPU of ``benchmarks/speed.py`` this is what brings the
  bundle from about 7 s per megapixel to the speed of the other U-Nets.

Both return the network's eval layout (B, 2 + K, H, W): sparse labels, score map (zeros for the watershed decoder),
then the K semantic probabilities, so the same post-processing
(:class:`~cellseg_monai.transforms.semantic_targets.SEUNetOutputsToInstancesd`) follows either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monai.inferers import Inferer
from torch import Tensor

from cellseg_monai.inferers.sliding_window import FittedSlidingWindowInferer
from cellseg_monai.inferers.tiled_instances import TiledInstanceInferer

__all__ = ["SEUNetInferer"]


class SEUNetInferer(Inferer):
    """Tiles for the sparse decoder, a fitted sliding window for the watershed decoder (see the module docstring).

    Args:
        decoder: ``"sparse"`` or ``"watershed"`` (the same value as the network's and the post-processing's).
        roi_size: tile of the sparse decoder, the training patch size (h, w).
        overlap: overlap of the sparse decoder's tiles (fraction of ``roi_size``).
        sw_batch_size: tiles per network call (sparse decoder).
        num_pixel_channels: K, the semantic heads.
        semantic_roi_size: largest tile of the watershed decoder (h, w) or one int.
        semantic_overlap: overlap of the watershed decoder's tiles (fraction of ``semantic_roi_size``).
        divisible_by: the network's total stride (tile sides of the watershed decoder are multiples of it).
    """

    def __init__(
        self,
        decoder: str,
        roi_size: Sequence[int],
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        num_pixel_channels: int = 4,
        semantic_roi_size: Sequence[int] | int = 256,
        semantic_overlap: float = 0.125,
        divisible_by: int = 8,
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.inferer: Inferer
        if decoder == "sparse":
            self.inferer = TiledInstanceInferer(roi_size, overlap, sw_batch_size, num_pixel_channels=num_pixel_channels)
        elif decoder == "watershed":
            self.inferer = FittedSlidingWindowInferer(
                semantic_roi_size, semantic_overlap, divisible_by=divisible_by, min_tile=4 * divisible_by
            )
        else:
            raise ValueError(f"decoder must be 'sparse' or 'watershed', got {decoder!r}.")

    def __call__(self, inputs: Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.inferer(inputs, network, *args, **kwargs)
