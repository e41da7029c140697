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
from monai.utils import convert_to_numpy
from torch import Tensor, nn

from cellseg_monai.postprocessing.canonical_merge import affine_table, canonical_instances

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

    def __call__(self, network: nn.Module, tiles: Tensor) -> list[dict[str, Any]]:
        net = getattr(network, "module", network)
        if not (hasattr(net, "predict_parameters") and hasattr(net, "render_instances")):
            raise TypeError(
                f"{type(net).__name__} has no predict_parameters / render_instances; use CanonicalShapeNet."
            )
        params = net.predict_parameters(tiles)
        size = tuple(tiles.shape[-2:])
        results = []
        for b in range(tiles.shape[0]):
            # p(s) <= 1, so an instance with p(z) <= threshold has no pixel above it: render only the others (exact,
            # and several times faster, as most of the N = A·h·w slots of a tile are absent)
            keep = (params["presence"][b] > self.threshold).nonzero()[:, 0]
            sub = {k: v[b : b + 1, keep] if k != "image_size" else v[b : b + 1] for k, v in params.items()}
            masks = convert_to_numpy(net.render_instances(sub, size)[0]) if len(keep) else np.zeros((0, *size))
            labels, groups = canonical_instances(
                masks, None, self.threshold, self.overlap, self.min_area, self.merge, return_groups=True
            )
            rows = affine_table(sub, index=0)
            areas = (masks > self.threshold).sum(axis=(1, 2))
            reps = [max(g, key=lambda n: (areas[n], rows[n]["presence"])) for g in groups]
            attrs = np.array([[rows[n][a] for a in AFFINE_ATTRIBUTES] for n in reps], dtype=np.float64)
            attrs = attrs.reshape(len(reps), len(AFFINE_ATTRIBUTES))
            results.append({"labels": labels, "scores": attrs[:, 0].copy(), "attributes": attrs})
        return results
