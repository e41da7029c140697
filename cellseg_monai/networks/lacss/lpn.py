"""LACSS location proposal network (LPN) head: per-cell score + offset regression on a stride-s grid.

The grid convention, the targets and the decoding are in :mod:`cellseg_monai.targets.locations`
(:func:`~cellseg_monai.targets.locations.encode_lpn_targets`, :func:`~cellseg_monai.targets.locations.decode_lpn`),
shared with the loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["LocationProposalHead"]


class LocationProposalHead(nn.Module):
    """Score + offset head on (B, C, h, w) features: two 3×3 conv layers, then 1×1 convs to 1 logit and 2 offsets.

    The score bias starts at ``log(prior / (1 - prior))`` (RetinaNet's focal-loss prior, prior 0.01) so an untrained
    network proposes few locations.

    Returns:
        ``(logits, offsets)``: (B, 1, h, w) score logits and (B, 2, h, w) offsets in units of the stride.
    """

    def __init__(self, in_channels: int, hidden: int = 32, prior: float = 0.01) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.score = nn.Conv2d(hidden, 1, 1)
        self.offset = nn.Conv2d(hidden, 2, 1)
        nn.init.constant_(self.score.bias, float(torch.log(torch.tensor(prior / (1 - prior)))))
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.body(x)
        return self.score(y), self.offset(y)
