"""Transforms that produce the bundles' output contract (:mod:`cellseg_monai.contract`).

- :class:`ProbabilityToInstances` / :class:`ProbabilityToInstancesd`: foreground probability (1, H, W) → instance
  labels (1, H, W), wrapping :func:`cellseg_monai.postprocessing.instances.probability_to_instances` (threshold, hole
  filling, connected components, distance-transform watershed, small-object removal; see that module for the steps
  and the reasons behind the defaults).
- :class:`InstanceOutputsd`: the last post-processing step of every bundle: checks the contract keys, fills the
  score map of methods that score no object, and stacks labels and score for score-ranked metrics.

(This module was ``cellseg_monai.transforms.postprocessing``, a name that clashed with the
:mod:`cellseg_monai.postprocessing` package; the old name still imports.)
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_numpy, ensure_tuple

from cellseg_monai.contract import ATTRIBUTES_KEY, FG_PROB_KEY, LABELS_KEY, SCORE_KEY, SCORED_KEY
from cellseg_monai.postprocessing.instances import WatershedParams, probability_to_instances

__all__ = ["InstanceOutputsd", "ProbabilityToInstances", "ProbabilityToInstancesd", "labels_like", "with_meta_of"]


def labels_like(labels: np.ndarray, like: torch.Tensor | np.ndarray) -> MetaTensor:
    """(H, W) instance labels as a (1, H, W) int32 MetaTensor on ``like``'s device, with a copy of its metadata
    (``meta`` and ``applied_operations``) when ``like`` is a MetaTensor."""
    device = like.device if isinstance(like, torch.Tensor) else None
    return with_meta_of(torch.as_tensor(labels[None], dtype=torch.int32, device=device), like)


class ProbabilityToInstances(Transform):
    """Foreground probability map → instance label map.

    Args:
        threshold: probability above which a pixel is foreground.
        params, overrides: the mask → instances settings,
            :class:`~cellseg_monai.postprocessing.instances.WatershedParams` and keyword overrides of its fields
            (``min_size=``, ``watershed=``, ...).

    Shapes:
        input (1, H, W) float probability in [0, 1] (tensor, MetaTensor or ndarray; any device) →
        output (1, H, W) int32 MetaTensor on the input's device, 0 = background, objects 1..N; the input's
        ``meta`` and ``applied_operations`` are copied.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, threshold: float = 0.5, params: WatershedParams | None = None, **overrides: Any) -> None:
        self.threshold = threshold
        self.params = WatershedParams.of(params, **overrides)

    def __call__(self, prob: torch.Tensor | np.ndarray) -> MetaTensor:
        if prob.ndim != 3 or prob.shape[0] != 1:
            raise ValueError(
                f"ProbabilityToInstances expects a one-channel (1, H, W) foreground probability, "
                f"got shape {tuple(prob.shape)}."
            )
        array = convert_to_numpy(prob)
        labels = probability_to_instances(array[0].astype(np.float32, copy=False), self.threshold, self.params)
        return labels_like(labels, prob)


class ProbabilityToInstancesd(MapTransform):
    """Dictionary wrapper of :class:`ProbabilityToInstances`.

    Args:
        keys: key(s) of the (1, H, W) foreground probability.
        output_key: key(s) to write the (1, H, W) int32 instance labels to, one per key (a single name is used for
            a single key); None overwrites the probability in place.
        threshold, params, overrides: see :class:`ProbabilityToInstances`.
        allow_missing_keys: skip keys that are absent instead of raising.
    """

    backend = ProbabilityToInstances.backend

    def __init__(
        self,
        keys: KeysCollection = FG_PROB_KEY,
        output_key: str | Sequence[str] | None = LABELS_KEY,
        threshold: float = 0.5,
        params: WatershedParams | None = None,
        allow_missing_keys: bool = False,
        **overrides: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys: tuple[Hashable, ...] = tuple(self.keys) if output_key is None else ensure_tuple(output_key)
        if len(self.output_keys) != len(self.keys):
            raise ValueError(
                f"output_key {output_key!r} gives {len(self.output_keys)} output keys for {len(self.keys)} keys "
                f"{self.keys}; give one output key per key (or None to overwrite the inputs)."
            )
        self.converter = ProbabilityToInstances(threshold, params, **overrides)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key, output_key in self.key_iterator(d, self.output_keys):
            d[output_key] = self.converter(d[key])
        return d


def _plain(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, MetaTensor):
        return x.as_tensor()
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return torch.as_tensor(x)
    raise TypeError(f"data[{name!r}] must be an array or tensor, got {type(x).__name__}.")


def with_meta_of(x: torch.Tensor, ref: Any) -> MetaTensor:
    """``x`` as a MetaTensor with a copy of ``ref``'s metadata (``meta`` and ``applied_operations``; a plain
    MetaTensor when ``ref`` has none)."""
    if isinstance(ref, MetaTensor):
        return MetaTensor(x, meta=copy.deepcopy(ref.meta), applied_operations=copy.deepcopy(ref.applied_operations))
    return MetaTensor(x)


class InstanceOutputsd(MapTransform):
    """The last post-processing step of every bundle: the output contract of :mod:`cellseg_monai.contract`.

    It checks what the method's own post-processing left and completes it:

    - ``data[keys]``: (1, H, W) integer-valued instance labels >= 0 → int32 (metadata kept);
    - ``data[score_key]``: (1, H, W) per-pixel object score in [0, 1]; a method that scores no object gives
      ``score_from`` (its foreground probability), whose mean over an object becomes the object's score;
    - ``data[scored_key]``: written, labels and score stacked (2, H, W) float32 — what score-ranked metrics read;
    - ``data[fg_key]`` and ``data[attributes_key]``: checked ((1, H, W) in [0, 1]; (F, H, W)) when present.

    Args:
        keys: the labels key, exactly one (default ``"pred"``).
        score_key: key of the score map.
        score_from: key of a (1, H, W) map in [0, 1] copied to ``score_key``; None: ``score_key`` must be present.
        scored_key: key the stacked (2, H, W) labels and score are written to.
        fg_key: key of the optional foreground probability.
        attributes_key: key of the optional per-object attributes.
        allow_missing_keys: pass a dict without labels through unchanged.

    Raises:
        KeyError: the score (or ``score_from``) is missing.
        ValueError: a shape, a value range or non-integer labels break the contract (the message names the key).
    """

    def __init__(
        self,
        keys: KeysCollection = LABELS_KEY,
        score_key: str = SCORE_KEY,
        score_from: str | None = None,
        scored_key: str = SCORED_KEY,
        fg_key: str = FG_PROB_KEY,
        attributes_key: str = ATTRIBUTES_KEY,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"InstanceOutputsd takes one labels key, got {self.keys}.")
        self.score_key, self.score_from, self.scored_key = score_key, score_from, scored_key
        self.fg_key, self.attributes_key = fg_key, attributes_key

    @staticmethod
    def _check_map(value: torch.Tensor, name: str, hw: tuple[int, ...], channels: int | None = 1) -> None:
        if value.ndim != 3 or (channels is not None and value.shape[0] != channels) or tuple(value.shape[1:]) != hw:
            want = f"({channels if channels is not None else 'F'}, {hw[0]}, {hw[1]})"
            raise ValueError(f"data[{name!r}] must be {want} like the labels, got shape {tuple(value.shape)}.")

    def _probability(self, d: Mapping[Hashable, Any], name: str, hw: tuple[int, ...]) -> torch.Tensor:
        value = _plain(d[name], name).float()
        self._check_map(value, name, hw)
        if value.numel() and (not torch.isfinite(value).all() or value.min() < 0.0 or value.max() > 1.0 + 1e-6):
            raise ValueError(f"data[{name!r}] must hold values in [0, 1].")
        return value.clamp(0.0, 1.0)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            raw = d[key]
            labels = _plain(raw, str(key))
            if labels.ndim != 3 or labels.shape[0] != 1:
                raise ValueError(f"data[{key!r}] must be (1, H, W) instance labels, got shape {tuple(labels.shape)}.")
            if labels.dtype == torch.bool or labels.is_complex():
                raise ValueError(f"data[{key!r}] must hold integer instance ids, got dtype {labels.dtype}.")
            if labels.is_floating_point() and not torch.equal(labels, labels.round()):
                raise ValueError(f"data[{key!r}] holds non-integer values; expected instance labels.")
            if labels.numel() and labels.min() < 0:
                raise ValueError(f"data[{key!r}] holds negative values; expected instance labels >= 0.")
            hw = tuple(labels.shape[1:])
            labels = labels.to(torch.int32)
            source = self.score_key if self.score_from is None else self.score_from
            if source not in d:
                raise KeyError(f"data[{source!r}] (the per-object score map of the output contract) is missing.")
            score = self._probability(d, source, hw)
            if self.fg_key in d:
                d[self.fg_key] = with_meta_of(self._probability(d, self.fg_key, hw), d[self.fg_key])
            if self.attributes_key in d:
                self._check_map(_plain(d[self.attributes_key], self.attributes_key), self.attributes_key, hw, None)
            d[key] = with_meta_of(labels, raw)
            d[self.score_key] = with_meta_of(score, raw)
            d[self.scored_key] = with_meta_of(torch.cat([labels.float(), score]), raw)
        return d
