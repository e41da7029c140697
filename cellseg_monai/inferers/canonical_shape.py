"""Per-tile instance prediction of the canonical-shape network, for :class:`TiledInstanceInferer`.

Costa, Gaudio, Campilho & Cardoso, MIDL 2022. On each tile the network predicts N affine placements of its
canonical shape and their presence p(z); the instances are rendered at the tile's full resolution and turned into a
label image by the post-processing P (:func:`cellseg_monai.postprocessing.canonical_instances`: threshold, merge
rule, overlap resolution). Each label's score is the presence of its *representative* (the largest of the
instances merged into it) and its attributes are the representative's affine parameters (:data:`AFFINE_ATTRIBUTES`,
from :func:`cellseg_monai.postprocessing.affine_table`, in input-image pixels of the whole image once stitched).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_numpy
from torch import Tensor, nn

from cellseg_monai.networks.canonical_shape import box_pixels, instance_boxes, shape_support_radius
from cellseg_monai.postprocessing.canonical_merge import affine_table, canonical_point_instances

__all__ = ["AFFINE_ATTRIBUTES", "CanonicalShapePredictor"]

#: attribute channels of the stitched output, in order (columns of the explainability CSV)
AFFINE_ATTRIBUTES: tuple[str, ...] = (
    "presence",
    "x",
    "y",
    "scale_x",
    "scale_y",
    "shear",
    "axis_major",
    "axis_minor",
    "rotation_deg",
)


class CanonicalShapePredictor:
    """``predictor(network, tiles)`` for :class:`~cellseg_monai.inferers.TiledInstanceInferer`.

    Args:
        threshold: an instance's pixels have p(s) · p(z) > threshold (0.5).
        merge: apply the merge rule of P (False: the "without P" ablation).
        overlap: merge threshold |b ∩ m| / |m| (0.5, the paper).
        min_area: smaller instances are dropped after overlap resolution (pixels).

    ``network`` must have ``predict_parameters(tiles)`` and ``render_instances(params, size)`` like
    :class:`~cellseg_monai.networks.CanonicalShapeNet` (a DDP wrapper's ``.module`` is used). The centres x, y come out in the tile's pixels;
    :attr:`xy_attributes` tells the inferer which attributes to shift by the tile's offset.
    """

    #: indices of the attributes (x, y) that are positions in tile pixels (the inferer makes them global)
    xy_attributes: tuple[int, int] = (AFFINE_ATTRIBUTES.index("x"), AFFINE_ATTRIBUTES.index("y"))

    def __init__(self, threshold: float = 0.5, merge: bool = True, overlap: float = 0.5, min_area: int = 1) -> None:
        if not 0.0 < threshold < 1.0 or not 0.0 < overlap <= 1.0 or min_area < 1:
            raise ValueError(
                f"threshold must be in (0, 1), overlap in (0, 1] and min_area >= 1; got {threshold}, {overlap}, "
                f"{min_area}."
            )
        self.threshold = float(threshold)
        self.merge = bool(merge)
        self.overlap = float(overlap)
        self.min_area = int(min_area)
        self._support: tuple[tuple, float] | None = None

    def __call__(self, network: nn.Module, tiles: Tensor) -> list[dict[str, Any]]:
        net = getattr(network, "module", network)
        if not (hasattr(net, "predict_parameters") and hasattr(net, "render_instances")):
            raise TypeError(
                f"{type(net).__name__} has no predict_parameters / render_instances; use CanonicalShapeNet."
            )
        if isinstance(tiles, MetaTensor):  # plain tensors: no metadata tracking on every op
            tiles = tiles.as_tensor()
        params = net.predict_parameters(tiles)
        size = (int(tiles.shape[-2]), int(tiles.shape[-1]))
        # p(s) <= 1, so an instance with p(z) <= threshold has no pixel above it: render only the others (exact,
        # and several times faster, as most of the N = A·h·w slots of a tile are absent)
        keep = params["presence"] > self.threshold  # (B, N)
        if hasattr(net, "render_points") and hasattr(net, "shape"):
            points = self._render_boxes(net, params, keep, size)
        else:
            points = self._render_tiles(net, params, keep, size)
        presence = convert_to_numpy(params["presence"]).astype(np.float64)
        results = []
        for b, (kept, index, pixels, prob) in enumerate(points):
            labels, groups = canonical_point_instances(
                index, pixels, prob, len(kept), size, self.threshold, self.overlap, self.min_area, self.merge, True
            )
            areas = np.bincount(index[prob > self.threshold], minlength=len(kept))
            # a label's representative: its largest instance (then the more present one)
            reps = [kept[max(g, key=lambda n: (areas[n], presence[b, kept[n]]))] for g in groups]
            rep_index = torch.as_tensor(reps, dtype=torch.long, device=params["L"].device)
            sub = {k: v[b : b + 1, rep_index] for k, v in params.items() if k != "image_size"}
            rows = affine_table(sub, index=0)
            attrs = np.array([[r[a] for a in AFFINE_ATTRIBUTES] for r in rows], dtype=np.float64)
            attrs = attrs.reshape(len(reps), len(AFFINE_ATTRIBUTES))
            results.append({"labels": labels, "scores": attrs[:, 0].copy(), "attributes": attrs})
        return results

    def _render_boxes(
        self, net: nn.Module, params: dict[str, Tensor], keep: Tensor, size: tuple[int, int]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Render each present instance on its box only (the pixels where p(s) can exceed the threshold).

        The box holds the canonical shape's support {p(s) > threshold} (:func:`shape_support_radius`, a polar scan);
        an instance with a pixel above the threshold on an inner border of its box is rendered again on the whole
        tile, so the labels are those of rendering every instance on the whole tile.
        """
        radius = self._support_radius(net.shape)
        boxes = instance_boxes(params, radius * 1.05, size)
        full = torch.tensor([0, 0, size[0], size[1]], dtype=boxes.dtype, device=boxes.device)
        boxes = torch.where(keep[..., None], boxes, torch.zeros_like(boxes))  # absent: an empty box
        if radius == 0.0:  # nothing to render anywhere: the shape never exceeds the threshold
            boxes.zero_()
        flat = boxes.reshape(-1, 4)
        for _ in range(2):
            index, rows, cols = box_pixels(flat)
            prob = net.render_points(params, index, rows, cols, size)
            hot = (prob >= self.threshold).nonzero()[:, 0]  # only pixels above the threshold can leak
            r, c, box = rows[hot], cols[hot], flat[index[hot]]
            inner_border = (
                ((r == box[:, 0]) & (box[:, 0] > 0))
                | ((r == box[:, 2] - 1) & (box[:, 2] < size[0]))
                | ((c == box[:, 1]) & (box[:, 1] > 0))
                | ((c == box[:, 3] - 1) & (box[:, 3] < size[1]))
            )
            leak = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
            leak[index[hot[inner_border]]] = True
            if not leak.any():
                break
            flat = torch.where(leak[:, None], full, flat)
        n = boxes.shape[1]
        counts = ((flat[:, 2] - flat[:, 0]).clamp(min=0) * (flat[:, 3] - flat[:, 1]).clamp(min=0)).view(-1, n).sum(1)
        index, pixels = convert_to_numpy(index), convert_to_numpy(rows * size[1] + cols)
        prob = convert_to_numpy(prob).astype(np.float64)
        out = []
        for b, (start, stop) in enumerate(_bounds(convert_to_numpy(counts))):
            kept = np.flatnonzero(convert_to_numpy(keep[b]))
            local = np.full(n, -1, dtype=np.int64)
            local[kept] = np.arange(len(kept))
            out.append((kept, local[index[start:stop] - b * n], pixels[start:stop], prob[start:stop]))
        return out

    @staticmethod
    def _render_tiles(
        net: nn.Module, params: dict[str, Tensor], keep: Tensor, size: tuple[int, int]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Render each present instance on the whole tile (any network with ``render_instances``)."""
        out = []
        for b in range(keep.shape[0]):
            kept = np.flatnonzero(convert_to_numpy(keep[b]))
            sub = {k: v[b : b + 1, kept] if k != "image_size" else v[b : b + 1] for k, v in params.items()}
            masks = convert_to_numpy(net.render_instances(sub, size)[0]) if len(kept) else np.zeros((0, *size))
            flat = masks.reshape(len(kept), -1).astype(np.float64)
            index, pixels = np.nonzero(flat > 0)
            out.append((kept, index, pixels, flat[index, pixels]))
        return out

    def _support_radius(self, shape: nn.Module) -> float:
        """:func:`shape_support_radius` at the threshold, computed once per weights of the shape."""
        key = (id(shape), *((p.data_ptr(), p._version) for p in shape.parameters()))
        if self._support is None or self._support[0] != key:
            self._support = (key, shape_support_radius(shape, self.threshold))
        return self._support[1]


def _bounds(counts: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of consecutive runs of the given lengths."""
    stops = np.cumsum(counts)
    return [(int(a), int(b)) for a, b in zip(stops - counts, stops, strict=True)]
