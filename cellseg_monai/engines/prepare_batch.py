"""Batch preparation for trainers whose network input and loss targets are several dictionary entries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import PrepareBatch
from monai.utils import ensure_tuple

__all__ = ["PrepareBatchDict"]


class PrepareBatchDict(PrepareBatch):
    """Give the network ``batch[input_key]`` and the loss a dict ``{key: batch[key]}`` of ``target_keys``.

    MONAI's default batch preparation returns ``(batch["image"], batch["label"])``. Weakly supervised losses need
    more than one target (ImPartial: the original image, the blind-spot mask and the scribbles), and the network
    sees a transformed input (the blind-spot masked image). ``SupervisedTrainer`` passes the second element to
    ``loss_function(pred, targets)`` unchanged, so the loss receives the dict.

    Args:
        input_key: batch key of the network input, a (B, C, H, W) tensor.
        target_keys: batch keys collected into the targets dict; every one must be present.
    """

    def __init__(self, input_key: str = "image", target_keys: Sequence[str] | str = ("label",)) -> None:
        self.input_key = input_key
        self.target_keys = ensure_tuple(target_keys)

    def __call__(
        self,
        batchdata: dict[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        missing = [k for k in (self.input_key, *self.target_keys) if k not in batchdata]
        if missing:
            raise KeyError(f"batch has no {missing}; it has {sorted(batchdata)} (check the preprocessing transforms)")

        def move(x: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(x).to(device=device, non_blocking=non_blocking, **kwargs)

        return move(batchdata[self.input_key]), {k: move(batchdata[k]) for k in self.target_keys}
