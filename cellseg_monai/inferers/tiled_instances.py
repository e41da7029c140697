"""Instance segmentation of images of any size: predict instances tile by tile, then stitch them into one label image.

MONAI's ``SlidingWindowInferer`` blends *per-pixel* outputs of overlapping tiles; instance label images cannot be
blended (tile A's nucleus 3 is not tile B's nucleus 3). :class:`TiledInstanceInferer` instead gives every instance
to exactly one tile: the tiles overlap, the image is partitioned into the tiles' *cores* (the boundary between two
neighbouring tiles is the middle of their overlap), and a tile keeps the instances whose centroid lies in its core.
An object that is cut by one tile's border has its centroid in the core of a tile that holds it whole, as long as
its extent beyond its centroid is at most half the overlap (StarDist and Cellpose stitch large images the same
way). Where kept instances of neighbouring tiles still overlap, the higher-scoring instance wins the pixels, and an
instance left with no pixel disappears.

Output of the inferer: ONE tensor (B, 2 + F + P, H, W): channel 0 the instance labels 1..K (0 = background, float
holding integers), channel 1 each instance's score painted over its pixels (0 on background), channels 2..2+F the
instance's F attributes (e.g. the affine parameters of the canonical-shape method) painted the same way, then P
per-pixel channels (e.g. the semantic probabilities of SparseSEU-Net), each pixel taken from the tile whose core holds
it (the core pixels of a tile with overlap are at least half the overlap away from its border, where a fully
convolutional network sees the context it saw in training). That is the ``(labels, score map)`` layout the ranked
metrics and ``SaveInstancesd`` read; see :class:`SplitInstanceOutputd` (``cellseg_monai.transforms``) to split it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy import ndimage
from torch import Tensor

__all__ = ["TiledInstanceInferer", "labels_scores_predictor", "tile_starts", "tile_cores"]

#: predictor(network, tiles (b, C, h, w)) -> one dict per tile: "labels" (h, w) ints 0..K, "scores" (K,) for
#: labels 1..K, optional "attributes" (K, F), optional "pixels" (P, h, w) per-pixel outputs.
Predictor = Callable[[Callable[..., Tensor], Tensor], list[dict[str, Any]]]


def tile_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start offsets of tiles of length ``roi`` covering ``size`` pixels with ``overlap`` (fraction of ``roi``).

    The step is ``roi - round(overlap · roi)`` (at least 1); the last tile ends at ``size`` exactly. ``size <= roi``
    gives one tile at 0 (the caller pads).
    """
    if roi < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"roi must be >= 1 and overlap in [0, 1); got {roi!r}, {overlap!r}.")
    if size <= roi:
        return [0]
    step = max(1, roi - int(round(overlap * roi)))
    starts = list(range(0, size - roi, step))
    return starts + [size - roi]


def tile_cores(starts: Sequence[int], roi: int, size: int) -> list[tuple[float, float]]:
    """Core interval [lo, hi) of each tile along one axis: the middles of the overlaps with its neighbours.

    The cores partition [0, size): the first starts at 0 and the last ends at ``size``.
    """
    cores = []
    for i, s in enumerate(starts):
        lo = 0.0 if i == 0 else (s + starts[i - 1] + roi) / 2.0
        hi = float(size) if i == len(starts) - 1 else (starts[i + 1] + s + roi) / 2.0
        cores.append((lo, hi))
    return cores


def labels_scores_predictor(network: Callable[..., Tensor], tiles: Tensor) -> list[dict[str, Any]]:
    """Default predictor: ``network(tiles)`` returns (b, 2 + P, h, w) = labels, per-pixel score and P >= 0 per-pixel
    channels ("pixels"); an instance's score is the mean of the score map over its pixels. (b, 1, h, w) (labels only)
    gives score 1 to every instance."""
    out = network(tiles)
    if out.ndim != 4 or out.shape[1] < 1:
        raise ValueError(f"the network must return (b, 1 or 2 + P, h, w) labels [+ scores]; got {tuple(out.shape)}.")
    results = []
    for i in range(out.shape[0]):
        labels = convert_to_numpy(out[i, 0]).astype(np.int64)
        k = int(labels.max(initial=0))
        if out.shape[1] == 2 and k > 0:
            score = convert_to_numpy(out[i, 1]).astype(np.float64)
            scores = ndimage.mean(score, labels, index=np.arange(1, k + 1))
        else:
            scores = np.ones(k)
        res = {"labels": labels, "scores": np.asarray(scores, dtype=np.float64)}
        if out.shape[1] > 2:
            res["pixels"] = out[i, 2:].detach().float().cpu().numpy()
        results.append(res)
    return results


def _core_pixels(lo: float, hi: float) -> tuple[int, int]:
    """Pixel indices [a, b) whose centres (index + 0.5) lie in the core [lo, hi): the same rule as for centroids."""
    return int(math.ceil(lo - 0.5)), int(math.ceil(hi - 0.5))


class TiledInstanceInferer(Inferer):
    """Tile an image, predict instances per tile, keep each instance in the tile whose core holds its centroid.

    Args:
        roi_size: (h, w) tile size (the network's training patch size, e.g. 128×128 for the canonical-shape net).
        overlap: overlap of neighbouring tiles as a fraction of the tile (0.5 default); objects up to half the
            overlapping width (in pixels) from their centroid to their edge are stitched whole.
        sw_batch_size: tiles per network call.
        predictor: ``predictor(network, tiles)`` → one dict per tile ("labels" (h, w) ints, "scores" (K,),
            optional "attributes" (K, F)); default :func:`labels_scores_predictor`. A predictor with an attribute
            ``xy_attributes = (ix, iy)`` declares attributes ix, iy to be x (column) and y (row) positions in tile
            pixels: the inferer adds the tile's offset so they are positions in the whole image.
        num_attributes: F, attribute channels in the output (0 when the predictor gives none).
        num_pixel_channels: P, per-pixel channels in the output (the predictor's "pixels"; 0 when it gives none).
        pad_mode: ``torch.nn.functional.pad`` mode for images smaller than a tile ("reflect", or "constant").

    ``inferer(inputs (B, C, H, W), network)`` → (B, 2 + F + P, H, W) on the input's device (see the module docstring).
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        predictor: Predictor | None = None,
        num_attributes: int = 0,
        pad_mode: str = "reflect",
        num_pixel_channels: int = 0,
    ) -> None:
        super().__init__()
        if len(roi_size) != 2 or min(int(r) for r in roi_size) < 1:
            raise ValueError(f"roi_size must be (h, w) with positive sides; got {roi_size!r}.")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1); got {overlap!r}.")
        if sw_batch_size < 1 or num_attributes < 0 or num_pixel_channels < 0:
            raise ValueError(
                "sw_batch_size must be >= 1, num_attributes and num_pixel_channels >= 0; got "
                f"{sw_batch_size}, {num_attributes}, {num_pixel_channels}."
            )
        self.roi_size = (int(roi_size[0]), int(roi_size[1]))
        self.overlap = float(overlap)
        self.sw_batch_size = int(sw_batch_size)
        self.predictor = predictor if predictor is not None else labels_scores_predictor
        self.num_attributes = int(num_attributes)
        self.num_pixel_channels = int(num_pixel_channels)
        self.pad_mode = pad_mode
        self.xy_attributes = getattr(self.predictor, "xy_attributes", None)

    def _pad(self, image: Tensor) -> tuple[Tensor, tuple[int, int]]:
        h, w = image.shape[-2:]
        ph, pw = max(0, self.roi_size[0] - h), max(0, self.roi_size[1] - w)
        if ph == 0 and pw == 0:
            return image, (h, w)
        mode = self.pad_mode
        if mode == "reflect" and (ph >= h or pw >= w):  # reflect needs pad < size
            mode = "replicate"
        return F.pad(image, (0, pw, 0, ph), mode=mode), (h, w)

    def __call__(self, inputs: Tensor, network: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
        if inputs.ndim != 4:
            raise ValueError(f"inputs must be (B, C, H, W); got shape {tuple(inputs.shape)}.")
        out = torch.stack([self._one(inputs[i : i + 1], network) for i in range(inputs.shape[0])])
        # like MONAI's sliding-window inference: a MetaTensor input gives a MetaTensor output with its metadata
        return convert_to_dst_type(out, inputs, device=out.device)[0] if isinstance(inputs, MetaTensor) else out

    def _one(self, image: Tensor, network: Callable[..., Tensor]) -> Tensor:
        padded, (h, w) = self._pad(image)
        hp, wp = padded.shape[-2:]
        (rh, rw) = self.roi_size
        ys, xs = tile_starts(hp, rh, self.overlap), tile_starts(wp, rw, self.overlap)
        # cores on the unpadded image: a padded tile's core ends at the image border
        cy, cx = tile_cores(ys, rh, h), tile_cores(xs, rw, w)
        grid = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
        kept: list[tuple[float, tuple[slice, slice], np.ndarray, np.ndarray]] = []
        first_pixel = 2 + self.num_attributes
        out = np.zeros((first_pixel + self.num_pixel_channels, h, w), dtype=np.float32)
        for b0 in range(0, len(grid), self.sw_batch_size):
            chunk = grid[b0 : b0 + self.sw_batch_size]
            tiles = torch.cat([padded[..., ys[i] : ys[i] + rh, xs[j] : xs[j] + rw] for i, j in chunk])
            with torch.no_grad():
                results = self.predictor(network, tiles)
            if len(results) != len(chunk):
                raise ValueError(f"the predictor returned {len(results)} results for {len(chunk)} tiles.")
            for (i, j), res in zip(chunk, results, strict=True):
                kept += self._keep(res, ys[i], xs[j], cy[i], cx[j], h, w)
                self._paste_pixels(res, out[first_pixel:], ys[i], xs[j], cy[i], cx[j])
        for new_id, (score, sl, mask, attrs) in enumerate(sorted(kept, key=lambda r: r[0]), start=1):
            out[0][sl][mask] = new_id  # ascending score: a higher-scoring instance overwrites a lower one
            out[1][sl][mask] = score
            for f in range(self.num_attributes):
                out[2 + f][sl][mask] = attrs[f]
        labels = out[0].astype(np.int64)
        if labels.any():  # renumber 1..K: instances overwritten completely disappear
            present = np.unique(labels[labels > 0])
            lut = np.zeros(int(labels.max()) + 1, dtype=np.float32)
            lut[present] = np.arange(1, len(present) + 1)
            out[0] = lut[labels]
        return torch.as_tensor(out, device=image.device)

    def _paste_pixels(
        self, res: dict[str, Any], out: np.ndarray, y0: int, x0: int, core_y: tuple, core_x: tuple
    ) -> None:
        """Copy the tile's per-pixel outputs inside its core (pixel centres in [lo, hi)) into ``out`` (P, H, W)."""
        pixels = res.get("pixels")
        p = 0 if pixels is None else int(np.shape(pixels)[0])
        if p != self.num_pixel_channels:
            raise ValueError(
                f"the predictor gave {p} per-pixel channels; expected num_pixel_channels={self.num_pixel_channels}."
            )
        if p == 0:
            return
        pixels = np.asarray(pixels)
        if pixels.shape[1:] != self.roi_size:
            raise ValueError(f"the predictor returned pixels of shape {pixels.shape}; expected (P, *{self.roi_size}).")
        (ya, yb), (xa, xb) = (_core_pixels(*core_y), _core_pixels(*core_x))
        out[:, ya:yb, xa:xb] = pixels[:, ya - y0 : yb - y0, xa - x0 : xb - x0]

    def _keep(
        self, res: dict[str, Any], y0: int, x0: int, core_y: tuple, core_x: tuple, h: int, w: int
    ) -> list[tuple[float, tuple[slice, slice], np.ndarray, np.ndarray]]:
        labels = np.asarray(res["labels"]).astype(np.int64)
        if labels.shape != self.roi_size:
            raise ValueError(f"the predictor returned labels of shape {labels.shape}; expected {self.roi_size}.")
        k = int(labels.max(initial=0))  # instances of the whole tile: the scores and attributes count them all
        labels = labels[: max(0, h - y0), : max(0, w - x0)]  # drop the padding (may drop whole instances)
        if k == 0:
            return []
        scores = np.asarray(res.get("scores", np.ones(k)), dtype=np.float64).reshape(-1)
        attrs = res.get("attributes")
        attrs = np.zeros((k, 0)) if attrs is None else np.asarray(attrs, dtype=np.float64).reshape(k, -1)
        if len(scores) < k or attrs.shape[1] != self.num_attributes:
            raise ValueError(
                f"the predictor gave {len(scores)} scores and {attrs.shape[1]} attributes for {k} instances; "
                f"expected {k} and num_attributes={self.num_attributes}."
            )
        if self.xy_attributes is not None:
            attrs = attrs.copy()
            attrs[:, self.xy_attributes[0]] += x0
            attrs[:, self.xy_attributes[1]] += y0
        ids = np.arange(1, k + 1)
        with np.errstate(invalid="ignore", divide="ignore"):  # ids cropped away with the padding: NaN, skipped below
            com = ndimage.center_of_mass(np.ones_like(labels), labels, ids)
        out = []
        for idx, sl in enumerate(ndimage.find_objects(labels)):
            if sl is None:
                continue
            y, x = com[idx][0] + 0.5 + y0, com[idx][1] + 0.5 + x0  # pixel centres, global coordinates
            if not (core_y[0] <= y < core_y[1] and core_x[0] <= x < core_x[1]):
                continue
            mask = labels[sl] == idx + 1
            gsl = (slice(sl[0].start + y0, sl[0].stop + y0), slice(sl[1].start + x0, sl[1].stop + x0))
            out.append((float(scores[idx]), gsl, mask, attrs[idx]))
        return out
