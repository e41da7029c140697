"""SE-U-Net: a U-Net with squeeze-and-excitation blocks and decoupled semantic decoder heads.

Prytula, "Accurate Whole Cell Instance Segmentation from Brightfield Images" (bachelor thesis, 2023), Sec. 4.2:
every encoder and decoder stage is two 3×3 convolutions (batch norm, ReLU) followed by a channel
squeeze-and-excitation block (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018; MONAI's
``ChannelSELayer`` with reduction ``se_reduction``); the decoder ends in one small head per semantic output
(foreground/cytoplasm, nuclei, border, background, overlap map), each with its own 3×3 convolution and a 1×1
logit layer, so the heads do not share their last features ("decoupled heads").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import ChannelSELayer
from torch import Tensor, nn

from cellseg_monai.torchscript import shape_repr

__all__ = ["SEConvBlock", "SEUNet", "pad_to_multiple"]


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pad (B, C, H, W) at the bottom/right to multiples of ``multiple``; returns the tensor and (H, W)."""
    h, w = x.shape[-2], x.shape[-1]
    ph, pw = (-h) % multiple, (-w) % multiple
    return (F.pad(x, (0, pw, 0, ph)) if ph or pw else x), (h, w)


class SEConvBlock(nn.Sequential):
    """(conv 3×3 → BN → ReLU) × 2 → channel squeeze-and-excitation. (B, C_in, H, W) → (B, C_out, H, W).

    Args:
        in_channels, out_channels: channel counts.
        se_reduction: SE bottleneck ratio r (the hidden layer has ``out_channels // r`` units, at least 1);
            0 disables the SE block (a plain U-Net stage).
    """

    def __init__(self, in_channels: int, out_channels: int, se_reduction: int = 8) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers += [nn.Conv2d(c_in, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)]
            layers.append(nn.ReLU(inplace=True))
        if se_reduction:
            layers.append(ChannelSELayer(2, out_channels, r=max(1, min(se_reduction, out_channels))))
        super().__init__(*layers)


class SEUNet(nn.Module):
    """U-Net with SE blocks and one decoupled head per semantic output.

    Args:
        in_channels: image channels.
        heads: head names in output order (see :data:`cellseg_monai.transforms.semantic_targets.HEADS`); any
            names work, the network only counts them.
        features: channels per stage, coarsest last; ``len(features)`` stages means ``len(features) - 1``
            2× poolings, so inputs are padded to multiples of ``2 ** (len(features) - 1)`` (and cropped back).
        se_reduction: SE reduction ratio (0 = no SE blocks).
        head_channels: channels of each head's hidden 3×3 convolution.

    ``forward(x)``: (B, in_channels, H, W) → (B, len(heads), H, W) logits (apply a sigmoid per channel).
    :meth:`decode` also returns the decoder features of every level (coarse → fine).
    """

    def __init__(
        self,
        in_channels: int = 3,
        heads: Sequence[str] = ("foreground", "border", "background", "overlap"),
        features: Sequence[int] = (16, 32, 64, 128),
        se_reduction: int = 8,
        head_channels: int = 16,
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"features needs >= 2 positive channel counts (one per stage), got {features}.")
        if not heads:
            raise ValueError("SEUNet needs at least one head.")
        if se_reduction < 0:
            raise ValueError(f"se_reduction must be >= 0, got {se_reduction}.")
        self.heads = tuple(heads)
        self.features = features
        self.stride = 2 ** (len(features) - 1)
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for f in features:
            self.encoder.append(SEConvBlock(c_in, f, se_reduction))
            c_in = f
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for coarse, fine in zip(features[:0:-1], features[-2::-1], strict=True):
            self.up.append(nn.ConvTranspose2d(coarse, fine, 2, stride=2))
            self.decoder.append(SEConvBlock(2 * fine, fine, se_reduction))
        self.head_layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(features[0], head_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(head_channels, 1, 1),
            )
            for _ in self.heads
        )

    @property
    @torch.jit.unused
    def decoder_channels(self) -> tuple[int, ...]:
        """Channels of the decoder levels, coarse → fine (the last one is at full resolution)."""
        return self.features[-2::-1]

    def decode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, C, H, W), H and W multiples of :attr:`stride` → (semantic logits (B, K, H, W), decoder features).

        Decoder features: one (B, features[l], H / 2**l, W / 2**l) tensor per level l = L-2 … 0 (coarse → fine).
        """
        skips: list[Tensor] = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        levels: list[Tensor] = []
        for i, (up, block) in enumerate(zip(self.up, self.decoder, strict=True)):
            x = block(torch.cat([up(x), skips[-2 - i]], dim=1))
            levels.append(x)
        logits = torch.cat([head(x) for head in self.head_layers], dim=1)
        return logits, levels

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"SEUNet expects (B, C, H, W) input, got shape {shape_repr(x)}.")
        padded, (h, w) = pad_to_multiple(x, self.stride)
        return self.decode(padded)[0][..., :h, :w]
