"""Per-pixel targets of the SE-U-Net semantic heads, and the decoding of the SE-U-Net outputs into instances.

Prytula, "Accurate Whole Cell Instance Segmentation from Brightfield Images" (bachelor thesis, 2023), Sec. 4.2–4.3:
an SE-U-Net with decoupled heads predicts, per pixel and each with its own sigmoid, the **foreground** (the whole
cell, "cytoplasm"), the **nuclei** (from a second label image, when a dataset has one), the instance **border**,
the **background**, and an **overlap probability map**. All targets are derived from instance labels, which may
overlap in this setting, so the labels are accepted either as a label image (1, H, W) or as a stack of binary
instance masks (N, H, W).

Overlap probability map (thesis Eq. 4.3–4.5, as this library implements them):

- Eq. 4.3, per instance i: ``d_i(x) = EDT_i(x) / max_x EDT_i(x)`` in (0, 1] inside instance i (``EDT_i`` is the
  Euclidean distance to the nearest pixel outside instance i), 0 outside;
- Eq. 4.4, max-reduction over instances: ``D(x) = max_i d_i(x)``;
- Eq. 4.5, log-scaling with background level b = 0.1: ``P(x) = b + (1 - b) · log(1 + (e - 1) · D(x))`` inside any
  instance, ``P(x) = b`` on background. ``P`` is 1 at every instance centre and falls towards the instance
  borders, so the pixels where two instances meet or overlap get low values and separate them.

- :func:`overlap_probability_map`, :func:`semantic_targets`: the math (numpy).
- :class:`SemanticTargets` / ``...d``: instance labels → (K, H, W) float32 targets, one channel per head, in the
  order of ``heads``. Apply it after the spatial augmentation (like ``InstancesToInteriorBoundaryd``).
- :class:`SEUNetOutputsToInstances` / ``...d``: the single tensor that
  :class:`cellseg_monai.networks.sparse_seunet.SparseSEUNet` returns in eval mode → instance labels + a score
  map, either from the sparse instance branch (``decoder="sparse"``) or by the seeded watershed of
  :func:`cellseg_monai.postprocessing.interior_boundary.interior_boundary_to_instances` on the semantic heads
  (``decoder="watershed"``: SEU-Net + watershed). One trained model gives both.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy
from scipy import ndimage as ndi

from cellseg_monai.postprocessing.interior_boundary import interior_boundary_to_instances
from cellseg_monai.transforms.postprocessing import labels_like

__all__ = [
    "DECODERS",
    "HEADS",
    "SEUNetOutputsToInstances",
    "SEUNetOutputsToInstancesd",
    "SemanticTargets",
    "SemanticTargetsd",
    "instance_stack",
    "overlap_probability_map",
    "semantic_targets",
]

HEADS: tuple[str, ...] = ("foreground", "nuclei", "border", "background", "overlap")
"""Head names understood by the targets, the network and the loss."""

DECODERS: tuple[str, ...] = ("sparse", "watershed")
"""How :class:`SEUNetOutputsToInstances` turns network outputs into instances."""


def instance_stack(labels: np.ndarray) -> np.ndarray:
    """Instance labels → (N, H, W) bool stack of instance masks.

    Args:
        labels: (H, W) integer label image (0 = background; ids need not be consecutive), or an (N, H, W)
            stack of instance masks (any dtype, non-zero = inside; overlapping masks allowed; empty masks dropped).

    Returns:
        (N, H, W) bool, one mask per instance (in increasing id order for a label image).
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
            raise TypeError(f"a label image must hold integer ids, got dtype {labels.dtype}.")
        ids = np.unique(labels)
        ids = ids[ids != 0]
        return labels[None] == ids[:, None, None] if ids.size else np.zeros((0, *labels.shape), bool)
    if labels.ndim == 3:
        stack = labels != 0
        return stack[stack.reshape(len(stack), -1).any(axis=1)]
    raise ValueError(f"labels must be an (H, W) label image or an (N, H, W) mask stack, got shape {labels.shape}.")


def _check_background(background: float) -> None:
    if not 0.0 <= background < 1.0:
        raise ValueError(f"background must be in [0, 1), got {background}.")


def overlap_probability_map(labels: np.ndarray, background: float = 0.1) -> np.ndarray:
    """Overlap probability map of instance labels (thesis Eq. 4.3–4.5; see the module docstring).

    Args:
        labels: (H, W) label image or (N, H, W) stack of (possibly overlapping) instance masks.
        background: the value on background pixels, in [0, 1).

    Returns:
        (H, W) float32 in [background, 1]: 1 at each instance's distance-transform maximum, ``background`` outside
        every instance.
    """
    _check_background(background)
    stack = instance_stack(labels)
    shape = stack.shape[1:]
    reduced = np.zeros(shape, np.float64)
    for mask in stack:
        edt = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]  # the image border counts as outside
        reduced = np.maximum(reduced, edt / edt.max())  # Eq. 4.3, Eq. 4.4
    inside = stack.any(axis=0)
    scaled = background + (1.0 - background) * np.log1p((math.e - 1.0) * reduced)  # Eq. 4.5
    return np.where(inside, scaled, background).astype(np.float32)


def _border(stack: np.ndarray, width: int) -> np.ndarray:
    """Union of the inner borders (``width`` px, 4-connected erosion) of every instance mask.

    Each mask is eroded on its own, so where two instances of a label image touch, both get a border band; the
    image edge does not count as outside (``border_value=1``), so a cell cut by a crop has no border along the cut.
    """
    structure = ndi.generate_binary_structure(2, 1)
    border = np.zeros(stack.shape[1:], bool)
    for mask in stack:
        border |= mask & ~ndi.binary_erosion(mask, structure, iterations=width, border_value=1)
    return border


def semantic_targets(
    labels: np.ndarray,
    heads: Sequence[str] = ("foreground", "border", "background", "overlap"),
    nuclei: np.ndarray | None = None,
    border_width: int = 1,
    overlap_background: float = 0.1,
) -> np.ndarray:
    """Instance labels → one target channel per head (thesis Sec. 4.2).

    Args:
        labels: (H, W) label image or (N, H, W) mask stack of the cells.
        heads: names from :data:`HEADS`, in output channel order.
        nuclei: (H, W) label image or (N, H, W) stack of nuclei; required when ``"nuclei"`` is a head.
        border_width: width (px) of the instance border band, inside each instance. Touching instances of a label
            image each get their own band, so the border separates them.
        overlap_background: background value of the overlap map (Eq. 4.5).

    Returns:
        (len(heads), H, W) float32: foreground, nuclei, border, background in {0, 1}; overlap in
        [overlap_background, 1].
    """
    unknown = [h for h in heads if h not in HEADS]
    if unknown or len(set(heads)) != len(heads) or not heads:
        raise ValueError(f"heads must be distinct names from {HEADS}, got {list(heads)}.")
    if isinstance(border_width, bool) or int(border_width) != border_width or border_width < 1:
        raise ValueError(f"border_width must be an integer >= 1 (px), got {border_width!r}.")
    stack = instance_stack(labels)
    fg = stack.any(axis=0)
    out = []
    for head in heads:
        if head == "foreground":
            out.append(fg)
        elif head == "background":
            out.append(~fg)
        elif head == "border":
            out.append(_border(stack, int(border_width)))
        elif head == "overlap":
            out.append(overlap_probability_map(stack, overlap_background) if len(stack) else None)
            if out[-1] is None:
                out[-1] = np.full(fg.shape, overlap_background, np.float32)
        else:  # nuclei
            if nuclei is None:
                raise ValueError(
                    'the "nuclei" head needs a nuclei label image (nuclei_key); datasets without one must leave '
                    '"nuclei" out of heads.'
                )
            nuc = instance_stack(nuclei)
            if nuc.shape[1:] != fg.shape:
                raise ValueError(f"nuclei labels are {nuc.shape[1:]} (H, W) but the cell labels are {fg.shape}.")
            out.append(nuc.any(axis=0))
    return np.stack([o.astype(np.float32) for o in out])


def _label_array(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    array = convert_to_numpy(x, wrap_sequence=True)
    if array.ndim != 3:
        raise ValueError(f"{name} must be (1, H, W) labels or an (N, H, W) mask stack, got shape {array.shape}.")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise TypeError(f"{name} must hold integer ids; got non-integer floating-point values.")
        array = array.astype(np.int64)
    return array[0] if array.shape[0] == 1 else array


class SemanticTargets(Transform):
    """Instance labels → (K, H, W) float32 semantic head targets (:func:`semantic_targets`).

    Args:
        heads, border_width, overlap_background: see :func:`semantic_targets`.

    ``__call__(labels, nuclei=None)``: ``labels`` (1, H, W) label image or (N, H, W) mask stack (tensor or
    array); ``nuclei`` the same for nuclei. Returns (K, H, W) float32 of the input's container type.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        heads: Sequence[str] = ("foreground", "border", "background", "overlap"),
        border_width: int = 1,
        overlap_background: float = 0.1,
    ) -> None:
        semantic_targets(np.zeros((1, 1), np.int32), heads, np.zeros((1, 1), np.int32), border_width)  # validate
        _check_background(overlap_background)
        self.heads = tuple(heads)
        self.border_width = int(border_width)
        self.overlap_background = float(overlap_background)

    def __call__(
        self, labels: torch.Tensor | np.ndarray, nuclei: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor | np.ndarray:
        cells = _label_array(labels, "labels")
        nuc = None if nuclei is None else _label_array(nuclei, "nuclei")
        targets = semantic_targets(cells, self.heads, nuc, self.border_width, self.overlap_background)
        out, *_ = convert_to_dst_type(
            targets, dst=labels, dtype=torch.float32 if isinstance(labels, torch.Tensor) else np.float32
        )
        return out


class SemanticTargetsd(MapTransform):
    """Dictionary wrapper of :class:`SemanticTargets`: ``data[keys]`` (cells) → ``data[output_key]`` (K, H, W).

    Args:
        keys: key of the cell labels (exactly one).
        output_key: where the targets go.
        nuclei_key: key of the nuclei labels, needed only when ``"nuclei"`` is in ``heads``.
        heads, border_width, overlap_background: see :func:`semantic_targets`.
        allow_missing_keys: skip when the label key is absent.
    """

    backend = SemanticTargets.backend

    def __init__(
        self,
        keys: KeysCollection = "label",
        output_key: str = "semantic",
        nuclei_key: str | None = None,
        heads: Sequence[str] = ("foreground", "border", "background", "overlap"),
        border_width: int = 1,
        overlap_background: float = 0.1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SemanticTargetsd takes exactly one label key, got {self.keys}.")
        if "nuclei" in heads and nuclei_key is None:
            raise ValueError('the "nuclei" head needs nuclei_key (the key of a nuclei label image).')
        self.output_key = output_key
        self.nuclei_key = nuclei_key
        self.encoder = SemanticTargets(heads, border_width, overlap_background)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            nuclei = d[self.nuclei_key] if "nuclei" in self.encoder.heads else None
            d[self.output_key] = self.encoder(d[key], nuclei)
        return d


class SEUNetOutputsToInstances(Transform):
    """Eval output of :class:`~cellseg_monai.networks.sparse_seunet.SparseSEUNet` → instance labels + score map.

    The input is one image's (2 + K, H, W) tensor: channel 0 the sparse branch's instance labels, channel 1 their
    per-pixel score, channels 2.. the sigmoid probabilities of the K semantic heads in ``heads`` order.

    Args:
        decoder: ``"sparse"`` — labels and scores of the sparse instance branch (SparseSEU-Net);
            ``"watershed"`` — SEU-Net + watershed: foreground P_fg (the mean of P(foreground) and
            1 - P(background) when both heads exist), interior P_fg · (1 - P(border)), boundary P_fg · P(border),
            decoded by :func:`cellseg_monai.postprocessing.interior_boundary.interior_boundary_to_instances`; the
            score map is P_fg.
        heads: the network's head names (channel order), must hold "foreground" or "background"; "border" is
            needed by the watershed decoder.
        interior_threshold, foreground_threshold, min_size: watershed decoder parameters (see
            ``interior_boundary_to_instances``).

    Returns (``__call__``): ``(labels, score, fg_prob)``: (1, H, W) int32 MetaTensor, (1, H, W) float32 score of
    each pixel's instance (0 on background), (1, H, W) float32 foreground probability in [0, 1].
    """

    def __init__(
        self,
        decoder: str = "sparse",
        heads: Sequence[str] = ("foreground", "border", "background", "overlap"),
        interior_threshold: float = 0.5,
        foreground_threshold: float = 0.5,
        min_size: int = 16,
    ) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}.")
        self.heads = tuple(heads)
        if "foreground" not in self.heads and "background" not in self.heads:
            raise ValueError(f"heads must include 'foreground' or 'background', got {list(heads)}.")
        if decoder == "watershed" and "border" not in self.heads:
            raise ValueError("the watershed decoder needs a 'border' head.")
        self.decoder = decoder
        self.kwargs = {
            "interior_threshold": interior_threshold,
            "foreground_threshold": foreground_threshold,
            "min_size": min_size,
        }

    def _channel(self, out: torch.Tensor, head: str) -> torch.Tensor:
        return out[2 + self.heads.index(head)]

    def __call__(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = torch.as_tensor(out)
        if out.ndim != 3 or out.shape[0] != 2 + len(self.heads):
            raise ValueError(
                f"expected the (2 + {len(self.heads)}, H, W) output of SparseSEUNet for heads {list(self.heads)}, "
                f"got shape {tuple(out.shape)}."
            )
        probs = [self._channel(out, "foreground")] if "foreground" in self.heads else []
        if "background" in self.heads:
            probs.append(1.0 - self._channel(out, "background"))
        fg = (sum(probs) / len(probs)).clamp(0.0, 1.0).float()
        if self.decoder == "sparse":
            labels_np = convert_to_numpy(out[0]).round().astype(np.int32)
            score = out[1:2].float()
        else:
            border = self._channel(out, "border").float()
            prob = convert_to_numpy(torch.stack([1.0 - fg, fg * (1.0 - border), fg * border]))
            labels_np = interior_boundary_to_instances(prob, **self.kwargs)
            score = fg[None] * torch.as_tensor(labels_np[None] > 0, device=fg.device)
        labels = labels_like(labels_np, out)  # a MetaTensor: score and fg follow, so the three can be concatenated
        return labels, MetaTensor(score, meta=dict(labels.meta)), MetaTensor(fg[None], meta=dict(labels.meta))


class SEUNetOutputsToInstancesd(MapTransform):
    """Dictionary wrapper of :class:`SEUNetOutputsToInstances`.

    Reads the (2 + K, H, W) network output under ``keys`` (one key) and writes instance labels (1, H, W) under
    ``output_key``, the per-pixel instance score under ``score_key`` and the foreground probability under
    ``fg_key`` (for pixel metrics). Other arguments: see :class:`SEUNetOutputsToInstances`.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_key: str = "pred",
        score_key: str = "score",
        fg_key: str = "fg_prob",
        decoder: str = "sparse",
        heads: Sequence[str] = ("foreground", "border", "background", "overlap"),
        interior_threshold: float = 0.5,
        foreground_threshold: float = 0.5,
        min_size: int = 16,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SEUNetOutputsToInstancesd takes exactly one key, got {self.keys}.")
        self.output_key, self.score_key, self.fg_key = output_key, score_key, fg_key
        self.decoder = SEUNetOutputsToInstances(decoder, heads, interior_threshold, foreground_threshold, min_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            labels, score, fg = self.decoder(d[key])
            d[self.output_key], d[self.score_key], d[self.fg_key] = labels, score, fg
        return d
