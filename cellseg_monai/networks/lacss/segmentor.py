"""LACSS segmentor: one mask per location, computed on a local crop of shared image features.

Shrestha, Kuang & Yu (Communications Biology 6:232, 2023, "segmentation FCN"): image features are computed once;
for each location a square window of side ``crop_size`` centred on it is cut out of a projected feature map, a
position encoding of the pixel's offset from the location is added (it tells the FCN *which* cell to segment), and
a small FCN turns the crop into one mask logit per pixel. Masks are pasted back into a label image; where two masks
overlap the higher-scoring instance wins.

Windows: :func:`~cellseg_monai.targets.locations.window_coordinates` and
:func:`~cellseg_monai.targets.locations.crop_patches` (shared with the loss), S = ``crop_size``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cellseg_monai.targets.locations import crop_patches, window_coordinates

__all__ = ["LacssSegmentor", "paste_instances"]


def paste_instances(
    masks: torch.Tensor,
    batch_index: torch.Tensor,
    centers: torch.Tensor,
    scores: torch.Tensor,
    shape: tuple[int, int, int],
    min_area: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste binary crop masks into instance label images; overlaps go to the higher score.

    Args:
        masks: (K, S, S) bool masks of the windows (see :func:`window_coordinates`).
        batch_index: (K,) image index of each mask.
        centers: (K, 2) (y, x) window centres.
        scores: (K,) instance scores (ties: the later index wins).
        shape: (B, H, W) of the output.
        min_area: instances with fewer visible pixels after overlap resolution are removed.

    Returns:
        ``(labels, score_map)``: (B, H, W) int64 labels 1..N per image (0 background; ids follow decreasing score)
        and (B, H, W) float32, each pixel holding the score of its instance (0 on background).
    """
    b, h, w = shape
    k, s, _ = masks.shape
    device = masks.device
    labels = torch.zeros(b, h * w, dtype=torch.int64, device=device)
    score_map = torch.zeros(b, h * w, dtype=torch.float32, device=device)
    if k == 0:
        return labels.reshape(b, h, w), score_map.reshape(b, h, w)
    rows, cols = window_coordinates(centers, s)
    rr = rows[:, :, None].expand(k, s, s)
    cc = cols[:, None, :].expand(k, s, s)
    inside = masks.to(torch.bool) & (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    # paint in ascending score so the best instance is painted last; ids by descending score
    order = torch.argsort(scores.float(), stable=True)
    rank = torch.empty_like(order)
    rank[torch.argsort(scores.float(), descending=True, stable=True)] = torch.arange(k, device=device)
    paint_order: list[int] = order.tolist()
    for i in paint_order:
        flat = (rr[i] * w + cc[i])[inside[i]]
        labels[batch_index[i], flat] = rank[i] + 1
        score_map[batch_index[i], flat] = scores[i].float()
    labels = labels.reshape(b, h, w)
    score_map = score_map.reshape(b, h, w)
    for bi in range(b):
        ids, counts = torch.unique(labels[bi], return_counts=True)
        keep_ids = ids[(ids > 0) & (counts >= max(min_area, 1))]
        lut = torch.zeros(k + 1, dtype=torch.int64, device=device)
        lut[keep_ids] = torch.arange(1, keep_ids.numel() + 1, device=device)
        labels[bi] = lut[labels[bi]]
        score_map[bi] = torch.where(labels[bi] > 0, score_map[bi], torch.zeros_like(score_map[bi]))
    return labels, score_map


class LacssSegmentor(nn.Module):
    """Per-location mask FCN on crops of a shared feature map, with a position encoding.

    Args:
        in_channels: channels of the (B, C, H, W) full-resolution features.
        hidden: channels of the projected features and of the FCN.
        crop_size: window side S in pixels (LACSS default 96).
        stride: the FCN runs on the projected features average-pooled by ``stride`` (1 or a divisor of S / 2) and
            its logits are upsampled (bilinear) back to S × S: ``stride²`` times less work per window. Window
            centres must then be multiples of ``stride`` (:meth:`snap`).

    ``forward(features, batch_index, centers)`` → (K, 1, S, S) mask logits. The projection (1×1 conv) runs once per
    image; per window the position encoding ``PE(dy, dx) = Conv1x1([dy/S, dx/S, sqrt(dy²+dx²)/S])`` and an
    instance code (a linear map of the feature vector at the window centre, so the FCN knows which cell it segments)
    are added, and a 3×3 conv + 1×1 conv FCN gives the logits.
    """

    def __init__(self, in_channels: int, hidden: int = 32, crop_size: int = 96, stride: int = 1) -> None:
        super().__init__()
        if crop_size < 3:
            raise ValueError(f"crop_size must be >= 3, got {crop_size}")
        if stride < 1 or (stride > 1 and crop_size % (2 * stride)):
            raise ValueError(f"stride must be 1 or divide crop_size / 2; got stride {stride}, crop_size {crop_size}")
        self.crop_size, self.stride = crop_size, stride
        self.project = nn.Conv2d(in_channels, hidden, 1)
        self.position = nn.Conv2d(3, hidden, 1)
        self.instance = nn.Linear(hidden, hidden)
        self.fcn = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def position_input(self) -> torch.Tensor:
        """(1, 3, S', S') input ``[dy, dx, sqrt(dy² + dx²)] / S'`` of the position encoding, S' = crop_size / stride.

        Built on each call (on the CPU, then moved to the device and dtype of the encoding's weights, as a buffer would
        be) rather than held in a buffer: TorchScript adds even a non-persistent buffer to an exported state dict.
        """
        size = self.crop_size // self.stride
        ar = (torch.arange(size, dtype=torch.float32) - size // 2) / size
        dy, dx = torch.meshgrid(ar, ar, indexing="ij")
        return torch.stack([dy, dx, torch.sqrt(dy**2 + dx**2)])[None].to(self.position.weight)

    def snap(self, locations: torch.Tensor) -> torch.Tensor:
        """(K, 2) float (y, x) → (K, 2) int64 window centres: rounded to the nearest multiple of ``stride``."""
        return (torch.round(locations.float() / self.stride) * self.stride).long()

    def project_features(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) features → (B, hidden, H / stride, W / stride) projected features (once per image)."""
        projected = self.project(features)
        return F.avg_pool2d(projected, self.stride) if self.stride > 1 else projected

    def segment(self, projected: torch.Tensor, batch_index: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """(K, 1, S, S) mask logits of the windows centred at ``centers`` (K, 2) (multiples of ``stride``)."""
        size = self.crop_size // self.stride
        crops = crop_patches(projected, batch_index, torch.div(centers, self.stride, rounding_mode="floor"), size)
        if crops.shape[0] == 0:
            return crops.new_zeros(0, 1, self.crop_size, self.crop_size)
        centre = self.instance(crops[:, :, size // 2, size // 2])[:, :, None, None]
        logits = self.fcn(crops + self.position(self.position_input()) + centre)
        if self.stride > 1:
            logits = F.interpolate(logits, scale_factor=float(self.stride), mode="bilinear", align_corners=False)
        return logits

    def forward(self, features: torch.Tensor, batch_index: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        return self.segment(self.project_features(features), batch_index, self.snap(centers))
