"""Test-time augmentation: average an inferer's dense output over mirrored and rotated copies of the input.

:class:`FlipAveragingInferer` wraps another inferer (MONAI's or ours). For each transform of the image's symmetry group
it transforms the input, runs the inner inferer, maps the output back to the input's frame and averages; the
post-processing then sees one output of the usual layout. ``augmentation`` chooses the transforms:

- ``"none"``: the inner inferer alone, called as is (no copy, no overhead);
- ``"flips"``: identity, left-right, up-down and both flips (4 passes; Cellpose's ``augment`` also averages flipped
  predictions);
- ``"dihedral"``: the 8 symmetries of the square (the four flips, each also transposed: 8 passes).

Averaging is only sound for outputs whose channels are scalar per-pixel maps (probabilities, logits, mixture
parameters), which a mirrored image maps to the mirrored map. Channels that are not — instance labels, or a vector
field whose components change sign or swap under a flip — are listed in ``keep_channels``: they are taken from the
identity pass, unaveraged. A channel-first tensor output ``(B, C, H, W)``, or a dict / tuple / list of them, is
accepted; any other output (e.g. a list of detections) is refused with an error rather than averaged wrongly.

The network runs ``len(transforms)`` times, so inference costs that many times the network time (the
post-processing once): ``python benchmarks/speed.py`` measures it, and the bundles' docs give the ``val`` scores
with and without (the bundle's config id ``test_time_augmentation``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["AUGMENTATIONS", "FlipAveragingInferer", "symmetry_transforms"]

#: accepted ``augmentation`` values and the number of network passes each makes
AUGMENTATIONS = {"none": 1, "flips": 4, "dihedral": 8}


def symmetry_transforms(augmentation: str) -> list[tuple[tuple[int, ...], bool]]:
    """The transforms of ``augmentation`` as ``(flipped spatial dims, transposed)`` pairs, identity first.

    Flipped dims are negative indices (``-1`` the last axis, ``-2`` the one before), so they fit any batch and channel
    layout; ``transposed`` swaps the last two axes after the flips.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"test-time augmentation must be one of {sorted(AUGMENTATIONS)}, got {augmentation!r}")
    flips: list[tuple[int, ...]] = [()] if augmentation == "none" else [(), (-1,), (-2,), (-2, -1)]
    transposes = (False, True) if augmentation == "dihedral" else (False,)
    return [(dims, t) for t in transposes for dims in flips]


def _forward(x: torch.Tensor, dims: tuple[int, ...], transposed: bool) -> torch.Tensor:
    if dims:
        x = torch.flip(x, dims)
    return x.transpose(-2, -1) if transposed else x


def _backward(y: torch.Tensor, dims: tuple[int, ...], transposed: bool) -> torch.Tensor:
    if transposed:
        y = y.transpose(-2, -1)
    return torch.flip(y, dims) if dims else y


class FlipAveragingInferer(Inferer):
    """Average ``inferer``'s output over mirrored (and, with ``"dihedral"``, transposed) copies of the input.

    Args:
        inferer: the inner inferer (e.g. a :class:`~cellseg_monai.inferers.FastInferer` around a sliding window).
        augmentation: ``"none"``, ``"flips"`` or ``"dihedral"`` (module docstring).
        keep_channels: channel indices taken from the identity pass instead of averaged (labels, vector fields).

    Raises:
        ValueError: an unknown ``augmentation``; at call time, an input that is not 2D channel-first, or an output
            that is not a channel-first tensor (or a dict / tuple / list of them) of the input's spatial size.
    """

    def __init__(self, inferer: Inferer, augmentation: str = "none", keep_channels: Sequence[int] = ()) -> None:
        super().__init__()
        self.inferer = inferer
        self.augmentation = augmentation
        self.transforms = symmetry_transforms(augmentation)
        self.keep_channels = [int(c) for c in keep_channels]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if len(self.transforms) == 1:
            return self.inferer(inputs, network, *args, **kwargs)
        if inputs.ndim != 4:
            raise ValueError(
                f"test-time augmentation {self.augmentation!r} needs a 2D batch (B, C, H, W), got shape "
                f"{tuple(inputs.shape)}"
            )
        spatial = tuple(inputs.shape[-2:])
        total: Any = None
        kept: Any = None
        for dims, transposed in self.transforms:
            out = self.inferer(_forward(inputs, dims, transposed), network, *args, **kwargs)
            back = self._zip(lambda y, d=dims, t=transposed: _backward(y, d, t).float(), out, check=spatial)
            if total is None:
                total = back
                if self.keep_channels:
                    kept = self._zip(lambda y: y[:, self.keep_channels].clone(), back)
            else:
                total = self._zip(lambda a, b: a.add_(b), total, back)
        n = float(len(self.transforms))
        if kept is None:
            return self._zip(lambda y: y.div_(n), total)
        return self._zip(lambda y, k: self._restore(y.div_(n), k), total, kept)

    def _restore(self, y: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        y[:, self.keep_channels] = kept
        return y

    def _zip(self, fn: Callable[..., torch.Tensor], *trees: Any, check: tuple[int, ...] | None = None) -> Any:
        """``fn`` applied leaf by leaf to tensors nested alike in dicts / tuples / lists; ``check``: the spatial
        size every leaf of the first tree must have once ``fn`` mapped it back."""
        first = trees[0]
        if isinstance(first, torch.Tensor):
            y = fn(*trees) if check is None or first.ndim == 4 else None
            if check is not None and (y is None or tuple(y.shape[-2:]) != check):
                raise ValueError(
                    f"test-time augmentation {self.augmentation!r} averages per-pixel maps (B, C, H, W) of the "
                    f"input's size {check}; the inferer returned shape {tuple(first.shape)}"
                )
            return y
        if isinstance(first, Mapping):
            return {k: self._zip(fn, *(t[k] for t in trees), check=check) for k in first}
        if isinstance(first, (tuple, list)):
            return type(first)(self._zip(fn, *items, check=check) for items in zip(*trees, strict=True))
        raise ValueError(
            f"test-time augmentation {self.augmentation!r} averages tensor outputs; the inferer returned "
            f"{type(first).__name__}"
        )
