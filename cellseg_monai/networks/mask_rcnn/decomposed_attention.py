"""Decomposed (efficient) self-attention on a feature map, as used on the FPN levels by Feng et al.

With queries ``Q = W_q x``, keys ``K = W_k x`` (``basis_channels`` each) and values ``V = W_v x``
(``value_channels``), all (B, ·, N) over the N = H·W locations, the attention is decomposed as

    E = ρ_q(Q)ᵀ (ρ_k(K) Vᵀ)            (Shen et al., "Efficient Attention", WACV 2021, Eq. 4; Feng et al.)

where ``ρ_q`` is a softmax over the channels of each query location (channel-wise) and ``ρ_k`` a softmax over the
locations of each key channel (location-wise), so each of the ``basis_channels`` keys is a global attention map
("basis") that pools the values into a (basis × value) context; every location mixes the bases by its own
channel-softmax weights. Cost is linear in N (no N × N matrix). The output is projected back to the input channels
and added to the input (residual), so the block keeps the shape (B, C, H, W).
"""

from __future__ import annotations

import torch
from torch import nn

from cellseg_monai.torchscript import shape_repr

__all__ = ["DecomposedSelfAttention"]


class DecomposedSelfAttention(nn.Module):
    """Residual decomposed self-attention, (B, C, H, W) → (B, C, H, W).

    Args:
        in_channels: C, channels of the feature map.
        basis_channels: channels of queries and keys (number of global attention bases), 64 in the paper.
        value_channels: channels of the values, 64 in the paper.
        zero_init: start the output projection at zero so the block is the identity at initialisation (keeps a
            pretrained or warm-started FPN intact).
    """

    def __init__(
        self, in_channels: int, basis_channels: int = 64, value_channels: int = 64, zero_init: bool = True
    ) -> None:
        super().__init__()
        self.query = nn.Conv2d(in_channels, basis_channels, 1)
        self.key = nn.Conv2d(in_channels, basis_channels, 1)
        self.value = nn.Conv2d(in_channels, value_channels, 1)
        self.project = nn.Conv2d(value_channels, in_channels, 1)
        if zero_init:
            nn.init.zeros_(self.project.weight)
            nn.init.zeros_(self.project.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention term ``E`` before projection: (B, value_channels, H, W)."""
        b, _, h, w = x.shape
        q = self.query(x).flatten(2).softmax(dim=1)  # (B, dk, N): channel-wise softmax per location
        k = self.key(x).flatten(2).softmax(dim=2)  # (B, dk, N): location-wise softmax per channel
        v = self.value(x).flatten(2)  # (B, dv, N)
        context = torch.bmm(k, v.transpose(1, 2))  # (B, dk, dv): each basis pools the values
        out = torch.bmm(context.transpose(1, 2), q)  # (B, dv, N)
        return out.reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"DecomposedSelfAttention expects (B, C, H, W), got {shape_repr(x)}")
        return x + self.project(self.attention(x))
