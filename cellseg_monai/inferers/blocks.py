"""Segment an image too large to hold at once, block by block, with every bundle's own inference.

A bundle's whole-image inference holds the network output and the post-processing arrays of the entire image at
once: some 150–400 bytes per pixel, so a 6000×6000 image would need 5–14 GB. :func:`segment_in_blocks` runs the
same inference (``segment``: inferer + post-processing up to the output contract, :mod:`cellseg_monai.contract`)
on blocks and stitches the instances into one label image, so memory is bounded by one block plus the
image-sized outputs.

The image is cut into a grid of equal *cores* (at most ``block_size`` pixels a side; they partition the image), and
each block is its core widened by ``margin`` pixels of context on every side that is not an image border. As in
:class:`~cellseg_monai.inferers.TiledInstanceInferer`, an instance belongs to the block whose core holds its
centroid (pixel centres), so an object whose extent from its centroid is at most ``margin`` is segmented whole,
exactly once; where instances kept by neighbouring blocks still overlap, the higher-scoring one wins the pixels
(ties: the first block's) and an instance left with less than half of its pixels disappears; ids are renumbered
1..K in block order.
The per-pixel maps of the contract (score, foreground probability, attributes) are taken from the block that owns
the pixel: the one whose instance holds it, else the one whose core holds it. ``pred_scored`` is rebuilt from the
stitched labels and score. Other keys a bundle's post-processing leaves are not stitched.

The margin also gives the network its context at block borders (core pixels are at least ``margin`` from a cut),
so with a margin of at least the network's receptive-field radius and the largest object's radius the blocks
agree with the whole-image result up to the network's own tiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_numpy

from cellseg_monai.contract import ATTRIBUTES_KEY, FG_PROB_KEY, LABELS_KEY, SCORE_KEY, SCORED_KEY
from cellseg_monai.postprocessing.measure import label_areas
from cellseg_monai.transforms.instance_outputs import with_meta_of

__all__ = ["InstanceStitcher", "block_windows", "needs_blocks", "segment_in_blocks"]

#: per-pixel maps of the output contract stitched next to the labels
STITCHED_MAPS: tuple[str, ...] = (SCORE_KEY, FG_PROB_KEY, ATTRIBUTES_KEY)
_ROWS = 512  # rows per chunk when counting / renumbering the whole label image (no full-size int64 copy)


def block_windows(size: int, block_size: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Blocks along one axis: ``(start, stop, core_lo, core_hi)`` of each, in pixels.

    ``ceil(size / block_size)`` equal cores partition ``[0, size)``; each block is its core widened by ``margin`` on
    both sides, clipped to the image.
    """
    if size < 1 or block_size < 1 or margin < 0:
        raise ValueError(f"size and block_size must be >= 1 and margin >= 0; got {size}, {block_size}, {margin}.")
    n = math.ceil(size / block_size)
    edges = [round(i * size / n) for i in range(n + 1)]
    return [(max(0, lo - margin), min(size, hi + margin), lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def needs_blocks(shape: tuple[int, ...], whole_image_size: int | None) -> bool:
    """Whether an image of spatial ``shape`` is segmented block by block: a side longer than ``whole_image_size``
    (None: never)."""
    return whole_image_size is not None and max(int(s) for s in shape) > int(whole_image_size)


def _numpy(value: Any, name: str, hw: tuple[int, int], channels: int | None = 1) -> np.ndarray:
    array = convert_to_numpy(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    if array.ndim != 3 or tuple(array.shape[1:]) != hw or (channels is not None and array.shape[0] != channels):
        want = f"({channels if channels is not None else 'F'}, {hw[0]}, {hw[1]})"
        raise ValueError(f"block output {name!r} must be {want}; got shape {tuple(array.shape)}.")
    return array


class InstanceStitcher:
    """Collects the contract outputs of blocks into whole-image outputs (see the module docstring).

    Args:
        shape: (H, W) of the whole image.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.labels = np.zeros(self.shape, dtype=np.int32)
        self.maps: dict[str, np.ndarray] = {}
        self.scores: list[np.ndarray] = [np.zeros(1)]  # per-instance scores; id 0 = background
        self.areas: list[np.ndarray] = [np.zeros(1)]  # per-instance areas in their own block
        self.count = 0
        self.done = False

    def add(self, out: Mapping[str, Any], rows: tuple[int, int, int, int], cols: tuple[int, int, int, int]) -> None:
        """Add one block's outputs: ``out`` holds the contract keys of the block ``rows`` × ``cols``, each a
        ``(start, stop, core_lo, core_hi)`` of :func:`block_windows`."""
        (y0, y1, cy0, cy1), (x0, x1, cx0, cx1) = rows, cols
        hw = (y1 - y0, x1 - x0)
        if self.done:
            raise RuntimeError("InstanceStitcher.result() was called: start a new stitcher for a new image.")
        labels = _numpy(out[LABELS_KEY], LABELS_KEY, hw)[0].astype(np.int64)
        score = _numpy(out[SCORE_KEY], SCORE_KEY, hw)[0].astype(np.float64)
        k = int(labels.max(initial=0))
        if k > labels.size:  # sparse ids: make them 1..n so per-id arrays stay the size of the block
            ids, inverse = np.unique(labels, return_inverse=True)
            labels = inverse.reshape(hw) + (1 if ids[0] != 0 else 0)
            k = int(labels.max(initial=0))
        lut = np.zeros(k + 1, dtype=np.int64)
        if k:
            ids = labels.ravel()
            area = np.bincount(ids, minlength=k + 1).astype(np.float64)
            row = np.bincount(ids, weights=np.repeat(np.arange(hw[0], dtype=np.float64), hw[1]), minlength=k + 1)
            col = np.bincount(ids, weights=np.tile(np.arange(hw[1], dtype=np.float64), hw[0]), minlength=k + 1)
            mean_score = np.bincount(ids, weights=score.ravel(), minlength=k + 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                cy, cx = row / area + 0.5 + y0, col / area + 0.5 + x0  # pixel centres, whole-image coordinates
                mean_score /= area
            keep = (area > 0) & (cy >= cy0) & (cy < cy1) & (cx >= cx0) & (cx < cx1)
            keep[0] = False
            kept = np.flatnonzero(keep)
            lut[kept] = np.arange(self.count + 1, self.count + 1 + len(kept))
            self.scores.append(mean_score[kept])
            self.areas.append(area[kept])
            self.count += len(kept)
        mapped = lut[labels]
        window = self.labels[y0:y1, x0:x1]  # a view: writes go to the whole image
        claim = mapped > 0
        taken = claim & (window > 0)
        if taken.any():  # overlap with an instance of an earlier block: the higher score wins, ties the earlier
            scores = np.concatenate(self.scores)
            claim[taken] = scores[mapped[taken]] > scores[window[taken]]
        window[claim] = mapped[claim]
        core = np.zeros(hw, dtype=bool)
        core[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = True
        take = claim | (core & (window == 0))
        for key in STITCHED_MAPS:
            if key not in out:
                continue
            values = _numpy(out[key], key, hw, None if key == ATTRIBUTES_KEY else 1)
            if key not in self.maps:
                self.maps[key] = np.zeros((values.shape[0], *self.shape), dtype=np.float32)
            elif self.maps[key].shape[0] != values.shape[0]:
                raise ValueError(
                    f"blocks disagree on the channels of {key!r}: {self.maps[key].shape[0]} vs {values.shape[0]}."
                )
            self.maps[key][:, y0:y1, x0:x1][:, take] = values[:, take]

    def result(self, like: Any = None) -> dict[str, MetaTensor]:
        """The whole-image contract outputs (call once, after the last block): labels renumbered 1..K, the
        stitched maps and ``pred_scored``; each a (C, H, W) CPU MetaTensor with a copy of ``like``'s metadata.

        An instance that lost more than half of its pixels to higher-scoring instances of other blocks is dropped
        (its remaining pixels become background): two blocks' versions of one object leave one object, not a
        sliver beside it."""
        if self.done:
            raise RuntimeError("InstanceStitcher.result() can be called once (it renumbers the labels in place).")
        self.done = True
        present = label_areas(self.labels, self.count) * 2 >= np.concatenate(self.areas)
        present[0] = False
        lut = np.zeros(self.count + 1, dtype=np.int32)
        lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
        for r in range(0, self.shape[0], _ROWS):
            self.labels[r : r + _ROWS] = lut[self.labels[r : r + _ROWS]]
        out = {LABELS_KEY: torch.from_numpy(self.labels[None])}
        out.update({key: torch.from_numpy(values) for key, values in self.maps.items()})
        scored = torch.empty((2, *self.shape), dtype=torch.float32)  # filled in place: no float copy of the labels
        scored[0], scored[1] = out[LABELS_KEY][0], out[SCORE_KEY][0]
        out[SCORED_KEY] = scored
        return {key: with_meta_of(value, like) for key, value in out.items()}


def segment_in_blocks(
    item: Mapping[str, Any],
    segment: Callable[[dict[str, Any]], Mapping[str, Any]],
    block_size: int = 2048,
    margin: int = 96,
    image_key: str = "image",
) -> dict[str, Any]:
    """Segment one (decollated) data dict block by block and stitch the results.

    Args:
        item: the data dict of one image (as the bundle's preprocessing leaves it), ``item[image_key]`` (C, H, W).
            Every value with the image's spatial shape in its last two axes (the image, a raw copy, a label) is
            cut to the block; other values are passed as they are.
        segment: one block's data dict → the same dict after inference and post-processing, holding the output
            contract's keys (``pred`` labels and ``score``, optionally ``fg_prob`` and ``attributes``).
        block_size: the longest side of a block's core.
        margin: context added to each side of a core, in pixels; objects whose extent from their centroid is
            at most ``margin`` are segmented whole.
        image_key: key of the image.

    Returns:
        ``item`` with the stitched contract keys added (see :class:`InstanceStitcher`).
    """
    image = item[image_key]
    if image.ndim != 3:
        raise ValueError(f"item[{image_key!r}] must be (C, H, W); got shape {tuple(image.shape)}.")
    hw = (int(image.shape[-2]), int(image.shape[-1]))
    stitcher = InstanceStitcher(hw)
    for rows in block_windows(hw[0], block_size, margin):
        for cols in block_windows(hw[1], block_size, margin):
            window = (slice(rows[0], rows[1]), slice(cols[0], cols[1]))
            block = {key: value[(..., *window)] if _is_spatial(value, hw) else value for key, value in item.items()}
            stitcher.add(segment(block), rows, cols)
    return {**item, **stitcher.result(like=image)}


def _is_spatial(value: Any, hw: tuple[int, int]) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim >= 2 and tuple(value.shape[-2:]) == hw
