"""Kinds of microscopy image, and a training sampler that draws the rare kinds more often.

A nucleus dataset is rarely one kind of image: BBBC038's ``train`` split has 442 fluorescence images, 81 colour
(mostly H&E) and 13 grey brightfield images with dark nuclei. Shuffled uniformly, a network sees a brightfield patch
in 2 % of its batches and learns that kind last, if at all. :class:`KindBalancedSampler` draws image ``i`` with a
probability proportional to ``n_k ** -power``, ``n_k`` the number of images of its kind: ``power`` 0 is the usual
shuffle, 1 gives every kind the same share of the draws, 0.5 (the square-root rule of repeat-factor sampling,
Gupta et al., LVIS, CVPR 2019) sits between them.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["IMAGE_KINDS", "KindBalancedSampler", "image_kind", "kind_weights"]

logger = logging.getLogger(__name__)

IMAGE_KINDS = ("fluorescence", "brightfield", "colour")


def image_kind(image: np.ndarray) -> str:
    """``"fluorescence"`` (a grey image whose nuclei are brighter than its background), ``"brightfield"`` (grey, with
    dark nuclei) or ``"colour"`` (channels that differ: mostly H&E).

    Args:
        image: (H, W) or (H, W, C) array as read by :func:`cellseg_monai.data.read_image`.
    """
    from cellseg_monai.postprocessing import nuclei_are_dark

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] >= 3:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            return "colour"
    grey = arr if arr.ndim == 2 else arr[..., 0]
    return "brightfield" if nuclei_are_dark(grey) else "fluorescence"


def kind_weights(kinds: Sequence[str], power: float) -> np.ndarray:
    """Drawing probability of each item: ``n_k ** -power`` for an item of a kind with ``n_k`` items, normalised to
    sum to 1 (``power`` 0: uniform; 1: each kind drawn equally often)."""
    if power < 0 or not math.isfinite(power):
        raise ValueError(f"power must be a finite number >= 0, got {power}")
    if len(kinds) == 0:
        raise ValueError("no items to weigh: the datalist is empty")
    counts = Counter(kinds)
    w = np.array([counts[k] ** -float(power) for k in kinds], dtype=np.float64)
    return w / w.sum()


class KindBalancedSampler(Sampler[int]):
    """Indices of a training datalist, drawn with replacement so that rare kinds of image (:func:`image_kind`) come
    up more often (:func:`kind_weights`); ``power=0`` is a plain shuffle without replacement.

    Each epoch draws ``num_samples`` indices (default: one epoch is as many draws as items) from the sampler's own
    generator, seeded by ``seed``, so a run is reproducible and a resumed run continues it (the generator is part of
    the pipeline state a :class:`~cellseg_monai.handlers.TrainingCheckpoint` saves). In a distributed run every rank
    draws the same sequence and keeps every ``num_replicas``-th index from its ``rank`` (the total is rounded up to a
    multiple of ``num_replicas``), so it replaces ``DistributedSampler``.

    Args:
        datalist: items with an image path under ``image_key`` (a bundle's ``train#datalist``).
        power: 0 (uniform) … 1 (every kind equally often); 0.5 by default.
        kinds: the kind of each item, if known; otherwise each image is read once to find it.
        num_samples: draws per epoch (all ranks together); default ``len(datalist)``.
        seed: seed of the sampler's generator.
        image_key: key of the image path in each item.
        num_replicas, rank: distributed layout; default: torch.distributed's when it is initialised, else 1 and 0.

    Raises:
        ValueError: an empty datalist, ``power`` < 0, ``kinds`` of another length, ``num_samples`` < 1, a rank
            outside ``[0, num_replicas)``.
        cellseg_monai.data.DataError: an image that cannot be read (the message names the file).
    """

    def __init__(
        self,
        datalist: Sequence[Mapping[str, Any]],
        power: float = 0.5,
        kinds: Sequence[str] | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        image_key: str = "image",
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if len(datalist) == 0:
            raise ValueError("KindBalancedSampler: the datalist is empty")
        if kinds is None:
            from cellseg_monai.data.io import read_image

            if power > 0:
                kinds = [image_kind(read_image(item[image_key])) for item in datalist]
            else:
                kinds = ["any"] * len(datalist)
        if len(kinds) != len(datalist):
            raise ValueError(f"KindBalancedSampler: {len(kinds)} kinds for {len(datalist)} items")
        self.kinds = list(kinds)
        self.power = float(power)
        self.weights = torch.as_tensor(kind_weights(self.kinds, self.power))
        self.total = len(datalist) if num_samples is None else int(num_samples)
        if self.total < 1:
            raise ValueError(f"KindBalancedSampler: num_samples must be >= 1, got {num_samples}")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = num_replicas or (torch.distributed.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"KindBalancedSampler: rank {self.rank} outside [0, {self.num_replicas})")
        self.per_rank = math.ceil(self.total / self.num_replicas)
        self.generator = torch.Generator().manual_seed(int(seed))
        if self.power > 0:
            logger.info("kind-balanced sampling (power %g): %s", self.power, self.describe())

    def shares(self) -> dict[str, tuple[int, float]]:
        """``{kind: (images, share of the draws)}``."""
        counts = Counter(self.kinds)
        w = self.weights.numpy()
        kinds = np.array(self.kinds)
        return {k: (n, float(w[kinds == k].sum())) for k, n in counts.items()}

    def describe(self) -> str:
        return ", ".join(f"{k} {n} images -> {s:.1%} of draws" for k, (n, s) in sorted(self.shares().items()))

    def __iter__(self) -> Iterator[int]:
        n = self.per_rank * self.num_replicas
        if self.power == 0:
            rounds = -(-n // len(self.kinds))
            drawn = torch.cat([torch.randperm(len(self.kinds), generator=self.generator) for _ in range(rounds)])[:n]
        else:
            drawn = torch.multinomial(self.weights, n, replacement=True, generator=self.generator)
        return iter(drawn[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.per_rank
