"""Post-processing transforms: foreground probability (1, H, W) → instance labels (1, H, W).

The array transform wraps :func:`cellseg_monai.postprocessing.instances.probability_to_instances` (threshold, hole
filling, connected components, distance-transform watershed, small-object removal); see that module for the steps
and the reasons behind the defaults.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, ensure_tuple

from cellseg_monai.postprocessing.instances import probability_to_instances

__all__ = ["ProbabilityToInstances", "ProbabilityToInstancesd", "labels_like"]


def labels_like(labels: np.ndarray, like: torch.Tensor | np.ndarray) -> MetaTensor:
    """(H, W) instance labels as a (1, H, W) int32 MetaTensor on ``like``'s device, with a copy of its metadata
    (``meta`` and ``applied_operations``) when ``like`` is a MetaTensor."""
    device = like.device if isinstance(like, torch.Tensor) else None
    out = torch.as_tensor(labels[None], dtype=torch.int32, device=device)
    if isinstance(like, MetaTensor):
        return MetaTensor(out, meta=copy.deepcopy(like.meta), applied_operations=copy.deepcopy(like.applied_operations))
    return MetaTensor(out)


class ProbabilityToInstances(Transform):
    """Foreground probability map → instance label map.

    Args:
        threshold, min_size, watershed, min_distance, h, sigma, connectivity, fill_holes, max_hole_size: see
            :func:`cellseg_monai.postprocessing.instances.probability_to_instances`.

    Shapes:
        input (1, H, W) float probability in [0, 1] (tensor, MetaTensor or ndarray; any device) →
        output (1, H, W) int32 MetaTensor on the input's device, 0 = background, objects 1..N; the input's
        ``meta`` and ``applied_operations`` are copied.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        threshold: float = 0.5,
        min_size: int = 16,
        watershed: bool = True,
        min_distance: int = 5,
        h: float = 1.0,
        sigma: float = 1.0,
        connectivity: int = 1,
        fill_holes: bool = True,
        max_hole_size: int | None = 256,
    ) -> None:
        self.kwargs = {
            "threshold": threshold,
            "min_size": min_size,
            "watershed": watershed,
            "min_distance": min_distance,
            "h": h,
            "sigma": sigma,
            "connectivity": connectivity,
            "fill_holes": fill_holes,
            "max_hole_size": max_hole_size,
        }

    def __call__(self, prob: torch.Tensor | np.ndarray) -> MetaTensor:
        if prob.ndim != 3 or prob.shape[0] != 1:
            raise ValueError(
                f"ProbabilityToInstances expects a one-channel (1, H, W) foreground probability, "
                f"got shape {tuple(prob.shape)}."
            )
        array = prob.detach().cpu().numpy() if isinstance(prob, torch.Tensor) else np.asarray(prob)
        labels = probability_to_instances(array[0].astype(np.float32, copy=False), **self.kwargs)
        return labels_like(labels, prob)


class ProbabilityToInstancesd(MapTransform):
    """Dictionary wrapper of :class:`ProbabilityToInstances`.

    Args:
        keys: key(s) of the (1, H, W) foreground probability.
        output_key: key(s) to write the (1, H, W) int32 instance labels to, one per key (a single name is used for
            a single key); None overwrites the probability in place.
        threshold, min_size, watershed, min_distance, h, sigma, connectivity, fill_holes, max_hole_size: see
            :class:`ProbabilityToInstances`.
        allow_missing_keys: skip keys that are absent instead of raising.
    """

    backend = ProbabilityToInstances.backend

    def __init__(
        self,
        keys: KeysCollection = "fg_prob",
        output_key: str | Sequence[str] | None = "pred",
        threshold: float = 0.5,
        min_size: int = 16,
        watershed: bool = True,
        min_distance: int = 5,
        h: float = 1.0,
        sigma: float = 1.0,
        connectivity: int = 1,
        fill_holes: bool = True,
        max_hole_size: int | None = 256,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys: tuple[Hashable, ...] = tuple(self.keys) if output_key is None else ensure_tuple(output_key)
        if len(self.output_keys) != len(self.keys):
            raise ValueError(
                f"output_key {output_key!r} gives {len(self.output_keys)} output keys for {len(self.keys)} keys "
                f"{self.keys}; give one output key per key (or None to overwrite the inputs)."
            )
        self.converter = ProbabilityToInstances(
            threshold=threshold,
            min_size=min_size,
            watershed=watershed,
            min_distance=min_distance,
            h=h,
            sigma=sigma,
            connectivity=connectivity,
            fill_holes=fill_holes,
            max_hole_size=max_hole_size,
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key, output_key in self.key_iterator(d, self.output_keys):
            d[output_key] = self.converter(d[key])
        return d
