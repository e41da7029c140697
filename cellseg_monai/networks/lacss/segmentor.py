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
    if k == 0:
        return (
            torch.zeros(b, h, w, dtype=torch.int64, device=device),
            torch.zeros(b, h, w, dtype=torch.float32, device=device),
        )
    rows, cols = window_coordinates(centers, s)
    hit = torch.nonzero(masks.to(torch.bool))  # (N, 3): window, row, column of every mask pixel
    win = hit[:, 0]
    r, c = rows[win, 0] + hit[:, 1], cols[win, 0] + hit[:, 2]
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    win, r, c = win[inside], r[inside], c[inside]
    # paint order: ascending score (ties: the later index paints last); each pixel goes to the last painter,
    # i.e. the highest paint position among the masks that cover it. Ids follow decreasing score.
    order = torch.argsort(scores.float(), stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(k, device=device)
    rank = torch.empty_like(order)
    rank[torch.argsort(scores.float(), descending=True, stable=True)] = torch.arange(k, device=device)
    top = torch.full((b * h * w,), -1, dtype=torch.int64, device=device)
    top.scatter_reduce_(0, (batch_index[win] * h + r) * w + c, position[win], reduce="amax")
    painted = top >= 0
    owner = order[top.clamp(min=0)]
    labels = torch.where(painted, rank[owner] + 1, torch.zeros_like(top)).reshape(b, h * w)
    score_map = torch.where(painted, scores.float()[owner], torch.zeros(1, device=device)).reshape(b, h * w)
    for bi in range(b):  # remove instances left smaller than min_area; renumber the rest 1..n in the same order
        keep = torch.bincount(labels[bi], minlength=k + 1) >= max(min_area, 1)
        keep[0] = False
        labels[bi] = (torch.cumsum(keep.long(), dim=0) * keep)[labels[bi]]
    score_map = torch.where(labels > 0, score_map, torch.zeros_like(score_map))
    return labels.reshape(b, h, w), score_map.reshape(b, h, w)


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

    def segment_masks(
        self,
        projected: torch.Tensor,
        batch_index: torch.Tensor,
        centers: torch.Tensor,
        threshold: float = 0.5,
        chunk: int = 16,
    ) -> torch.Tensor:
        """Inference form of :meth:`segment`: (K, S, S) bool masks ``sigmoid(logits) > threshold``, same values.

        Windows are sliced out of the padded feature map (no per-pixel index tensors) into a channels-last batch and
        go through the FCN ``chunk`` at a time, so a chunk's activations stay in the CPU caches. Centres (multiples of ``stride``) must
        lie within one grid cell of the image, as the proposals of :class:`~cellseg_monai.networks.lacss.Lacss` do.
        """
        size = self.crop_size // self.stride
        k = centers.shape[0]
        masks = torch.zeros(k, self.crop_size, self.crop_size, dtype=torch.bool, device=projected.device)
        if k == 0:
            return masks
        pad = size // 2 + 1
        padded = F.pad(projected, (pad, pad, pad, pad))
        grid = torch.div(centers, self.stride, rounding_mode="floor") + pad
        grid[:, 0].clamp_(pad - 1, projected.shape[-2] + pad)
        grid[:, 1].clamp_(pad - 1, projected.shape[-1] + pad)
        images: list[int] = batch_index.tolist()
        top: list[int] = (grid[:, 0] - size // 2).tolist()
        left: list[int] = (grid[:, 1] - size // 2).tolist()
        position = self.position(self.position_input())
        for start in range(0, k, chunk):
            stop = min(start + chunk, k)
            # channels-last crops: the FCN's convolutions run several times faster on them (oneDNN's native layout)
            crops = torch.empty(
                stop - start, padded.shape[1], size, size, dtype=position.dtype, device=padded.device
            ).contiguous(memory_format=torch.channels_last)
            for i in range(start, stop):
                window = padded[images[i], :, top[i] : top[i] + size, left[i] : left[i] + size]
                torch.add(window, position[0], out=crops[i - start])
            centre = self.instance(padded[batch_index[start:stop], :, grid[start:stop, 0], grid[start:stop, 1]])
            # added as a full tensor: a broadcast add onto channels-last bfloat16 is several times slower
            logits = self.fcn(
                crops.add_(centre[:, :, None, None].expand_as(crops).contiguous(memory_format=torch.channels_last))
            )
            if self.stride > 1:
                logits = F.interpolate(logits, scale_factor=float(self.stride), mode="bilinear", align_corners=False)
            masks[start:stop] = torch.sigmoid(logits[:, 0]) > threshold
        return masks

    def forward(self, features: torch.Tensor, batch_index: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        return self.segment(self.project_features(features), batch_index, self.snap(centers))
