"""Explainability output of the canonical-shape method: the learned canonical shape, rendered as a PNG."""

from __future__ import annotations

import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from monai.utils import convert_to_numpy
from torch import nn

__all__ = ["CanonicalShapeWriter"]

logger = logging.getLogger(__name__)


class CanonicalShapeWriter:
    """Write the network's canonical shape p(s | x, y, r) on [-extent, extent]² when the engine completes.

    Costa et al., MIDL 2022: every nucleus is an affine copy of this one shape, so the image explains the model.
    Written as ``<output_dir>/<filename>`` (8-bit grey PNG, p(s) × 255, canonical unit circle = ``size / (2 ·
    extent)`` pixels radius) and the raw float array as ``.npy`` beside it.

    Args:
        network: a :class:`~cellseg_monai.networks.CanonicalShapeNet` (or one wrapped by DDP: ``.module``).
        output_dir: folder to write to (created).
        size: side of the image in pixels.
        extent: half-width of the drawn canonical domain (canonical units).
        filename: PNG file name.
    """

    def __init__(
        self,
        network: nn.Module,
        output_dir: str | Path,
        size: int = 128,
        extent: float = 2.0,
        filename: str = "canonical_shape.png",
    ) -> None:
        net = getattr(network, "module", network)
        if not hasattr(net, "canonical_shape"):
            raise TypeError(f"{type(net).__name__} has no canonical_shape(size, extent); use CanonicalShapeNet.")
        self.network, self.output_dir, self.size, self.extent, self.filename = (
            net,
            Path(output_dir),
            size,
            extent,
            filename,
        )

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine=None) -> Path:
        shape = convert_to_numpy(self.network.canonical_shape(self.size, self.extent), dtype=np.float32)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / self.filename
        iio.imwrite(path, np.clip(np.round(shape * 255.0), 0, 255).astype(np.uint8))
        np.save(path.with_suffix(".npy"), shape)
        logger.info("canonical shape -> %s", path)
        return path
