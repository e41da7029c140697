"""Helpers that keep library code TorchScript-compatible.

``monai.bundle ckpt_export`` converts a bundle's ``network_def`` with ``torch.jit.script``, which compiles the
``forward`` of every submodule and every function it calls. Code on that path can only use what TorchScript
supports; these helpers cover the cases that recur in the networks and their in-network post-processing.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["shape_repr"]


def shape_repr(x: Tensor) -> str:
    """``str(tuple(x.shape))`` (e.g. ``"(1, 3, 64, 64)"``, ``"(5,)"``, ``"()"``) for error messages, in eager
    mode and in TorchScript (which cannot build a tuple of a dynamic length)."""
    dims = [str(d) for d in x.shape]
    if len(dims) == 1:
        return "(" + dims[0] + ",)"
    return "(" + ", ".join(dims) + ")"
