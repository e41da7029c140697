"""Background / interior / boundary probabilities → instance labels by a seeded watershed.

The decoding of the "3-class" target (Caicedo et al., "Evaluation of deep learning strategies for nucleus
segmentation in fluorescence images", Cytometry A 95(9), 2019: connected interiors are the nuclei, grown back
over their boundary band). Growing by a watershed instead of a fixed dilation lets each nucleus take exactly the
boundary pixels the network assigned to it, however thick:

1. foreground = P(interior) + P(boundary) > ``foreground_threshold`` (i.e. P(background) below it);
2. seeds = connected components of P(interior) > ``interior_threshold`` inside the foreground; seeds with fewer
   than ``seed_min_size`` px are dropped (a few noisy interior pixels on a boundary must not split a nucleus);
3. foreground components without a seed (a small nucleus predicted as boundary only) become one seed each when
   they have ``>= min_size`` px (``keep_unseeded``);
4. watershed of -P(interior) from the seeds, restricted to the foreground (Beucher & Meyer 1993): the watershed
   lines follow the valleys of P(interior), i.e. the predicted boundaries between touching nuclei;
5. watershed regions below ``min_size`` px lose their seed and the flood is repeated, so their pixels join a
   neighbour; objects still below ``min_size`` px are removed and the rest relabelled 1..N.

Defaults: both thresholds 0.5 (the arg-max decision between a class and the rest for softmax outputs);
``min_size=16`` px as in :mod:`cellseg_monai.postprocessing.instances`; ``seed_min_size=4`` px (a 2 × 2 square);
``connectivity=1`` (4-connected seeds and regions: interiors touching only at a corner stay apart).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed

from cellseg_monai.postprocessing.instances import remove_small_labels, seed_unseeded_components

__all__ = ["interior_boundary_to_instances"]


def _check(prob: np.ndarray, thresholds: dict[str, float], min_size: int, seed_min_size: int, connectivity: int):
    if prob.ndim != 3 or prob.shape[0] != 3:
        raise ValueError(
            f"prob must be (3, H, W) probabilities of background, interior and boundary, got shape {prob.shape}."
        )
    if not (np.issubdtype(prob.dtype, np.number) or prob.dtype == bool):
        raise TypeError(f"prob must be a numeric array, got dtype {prob.dtype}.")
    if np.isnan(prob).any():
        raise ValueError("prob contains NaN values.")
    for name, value in thresholds.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}.")
    if min_size < 0 or seed_min_size < 0:
        raise ValueError(f"min_size and seed_min_size must be >= 0, got {min_size} and {seed_min_size}.")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-connected) or 2 (8-connected), got {connectivity}.")


def interior_boundary_to_instances(
    prob: np.ndarray,
    interior_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    min_size: int = 16,
    seed_min_size: int = 4,
    connectivity: int = 1,
    keep_unseeded: bool = True,
) -> np.ndarray:
    """Class probabilities of (background, interior, boundary) → instance labels (steps in the module docstring).

    Args:
        prob: (3, H, W) float probabilities in [0, 1], channel 0 background, 1 interior, 2 boundary (a softmax
            output; channel 0 is not read). NaN is rejected.
        interior_threshold: P(interior) above which a pixel belongs to a seed.
        foreground_threshold: P(interior) + P(boundary) above which a pixel is foreground.
        min_size: objects with fewer pixels are removed (watershed fragments are merged into a neighbour first).
        seed_min_size: seeds with fewer pixels are dropped.
        connectivity: 1 for 4-connected, 2 for 8-connected seeds and objects.
        keep_unseeded: a foreground component of ``>= min_size`` px without any seed becomes one object.

    Returns:
        (H, W) int32 instance labels, 0 = background, objects numbered 1..N consecutively.

    Example:
        >>> classes = np.zeros((12, 20), int)
        >>> classes[2:10, 2:18] = 2  # two touching 8x8 squares, each with a 6x6 interior
        >>> classes[3:9, 3:9] = classes[3:9, 11:17] = 1
        >>> prob = np.stack([classes == k for k in range(3)]).astype(float)
        >>> labels = interior_boundary_to_instances(prob)
        >>> int(labels.max()), int((labels == 1).sum()), int((labels == 2).sum())
        (2, 64, 64)
    """
    prob = np.asarray(prob)
    thresholds = {"interior_threshold": interior_threshold, "foreground_threshold": foreground_threshold}
    _check(prob, thresholds, min_size, seed_min_size, connectivity)
    interior = prob[1].astype(np.float32)
    foreground = (interior + prob[2].astype(np.float32)) > foreground_threshold
    structure = ndi.generate_binary_structure(2, connectivity)

    seeds, _ = ndi.label((interior > interior_threshold) & foreground, structure=structure)
    seeds = remove_small_labels(seeds, seed_min_size)
    components, _ = ndi.label(foreground, structure=structure)
    if keep_unseeded:
        seeds = seed_unseeded_components(seeds, components, min_size)
    if seeds.max() == 0:
        return np.zeros(interior.shape, dtype=np.int32)

    labels = watershed(-interior, seeds, mask=foreground, connectivity=structure)
    areas = np.bincount(labels.ravel(), minlength=int(seeds.max()) + 1)
    small = areas < min_size
    small[0] = False
    if small[seeds].any():
        seeds = np.where(small[seeds], 0, seeds)
        if keep_unseeded:
            seeds = seed_unseeded_components(seeds, components, min_size)
        labels = watershed(-interior, seeds, mask=foreground, connectivity=structure) if seeds.any() else seeds
    labels = remove_small_labels(labels, min_size)
    return relabel_sequential(labels)[0].astype(np.int32)
