"""LACSS: location-assisted cell segmentation (Shrestha, Kuang & Yu, Communications Biology 6:232, 2023).

One model, three parts sharing a backbone:

- :class:`LacssBackbone`: encoder/decoder with multi-resolution features; "unet" (CPU-sized default) or "resnet50"
  (MONAI's ResNet-50 bottleneck encoder + FPN-style top-down decoder);
- a location proposal network (:class:`~cellseg_monai.networks.lacss.lpn.LocationProposalHead`) on the
  stride-``lpn_stride`` features: per-cell score and offset;
- a segmentor (:class:`~cellseg_monai.networks.lacss.segmentor.LacssSegmentor`) on local crops of the
  full-resolution features around each location;
- :class:`LacssAuxNet`, a small low field-of-view boundary network used only by the training loss.

``Lacss.forward(image)`` (inference, and training without points) returns ONE tensor (B, 2, H, W): channel 0 the
instance labels (0 background, float holding integers), channel 1 the per-pixel score of the instance (0 on
background) — what ranked metrics (``ap@t``) and ``SaveInstancesd(prob_key=...)`` read. Any H, W: the image is
zero-padded to a multiple of ``backbone.size_divisor`` and the output cropped back.

``Lacss.forward(image, points=point_map)`` in training mode returns a dict for
:class:`cellseg_monai.losses.lacss.LacssLoss` (``SupervisedTrainer`` passes the ``points`` keyword through
``monai.engines.PrepareBatchExtraInput(extra_keys={"points": "points"})``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from cellseg_monai.networks.lacss.lpn import LocationProposalHead
from cellseg_monai.networks.lacss.segmentor import LacssSegmentor, paste_instances
from cellseg_monai.postprocessing.nms import torch_distance_nms
from cellseg_monai.targets.locations import decode_lpn
from cellseg_monai.torchscript import shape_repr

__all__ = ["Lacss", "LacssAuxNet", "LacssBackbone", "match_locations"]


@torch.jit.interface
class _Layer(nn.Module):
    """TorchScript interface of the layers in the backbone's ModuleLists: lets ``self.up[i]`` take a variable ``i``
    (called as ``.forward``; TorchScript calls interface-typed modules only that way)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # the argument name of nn.Sequential and nn.Conv2d
        pass


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LacssBackbone(nn.Module):
    """Multi-resolution features: (B, C_in, H, W) → {"lpn": (B, out, H/s, W/s), "seg": (B, out, H, W)}.

    Args:
        in_channels: image channels.
        kind: "unet" — ``len(features)`` levels at strides 1, 2, 4, ... (two 3×3 convs each) and a U-Net decoder;
            "resnet50" — MONAI ``ResNet`` bottleneck [3, 4, 6, 3] encoder (strides 4–32) and a top-down decoder with
            lateral 1×1 convs, upsampled to full resolution with a shallow full-resolution stem for detail.
        features: channels per level ("unet").
        out_channels: channels of both outputs.
        lpn_stride: stride of the "lpn" output (a power of two; "unet": <= 2**(len(features)-1); "resnet50": >= 4).

    Attributes:
        size_divisor: H and W must be multiples of it (``Lacss`` pads).
    """

    def __init__(
        self,
        in_channels: int = 3,
        kind: str = "unet",
        features: tuple[int, ...] | list[int] = (16, 32, 64, 128),
        out_channels: int = 32,
        lpn_stride: int = 4,
    ) -> None:
        super().__init__()
        if lpn_stride < 1 or lpn_stride & (lpn_stride - 1):
            raise ValueError(f"lpn_stride must be a power of two, got {lpn_stride}")
        self.kind, self.lpn_stride = kind, lpn_stride
        self.lpn_level = lpn_stride.bit_length() - 1  # log2(lpn_stride)
        if kind == "unet":
            n = len(features)
            if n < 2 or lpn_stride > 2 ** (n - 1):
                raise ValueError(f"unet backbone: need >= 2 levels and lpn_stride <= {2 ** (n - 1)}")
            self.size_divisor = 2 ** (n - 1)
            self.down = nn.ModuleList(
                [nn.Sequential(_conv(in_channels, features[0]), _conv(features[0], features[0]))]
                + [
                    nn.Sequential(_conv(features[i - 1], features[i], 2), _conv(features[i], features[i]))
                    for i in range(1, n)
                ]
            )
            self.up = nn.ModuleList(
                [
                    nn.Sequential(_conv(features[i + 1] + features[i], features[i]), _conv(features[i], features[i]))
                    for i in range(n - 1)
                ]
            )
            self.lpn_out = nn.Conv2d(features[self.lpn_level], out_channels, 1)
            self.seg_out = nn.Conv2d(features[0], out_channels, 1)
        elif kind == "resnet50":
            from monai.networks.nets import ResNet

            if lpn_stride < 4 or lpn_stride > 32:
                raise ValueError(f"resnet50 backbone: lpn_stride must be in 4..32, got {lpn_stride}")
            self.size_divisor = 32
            self.encoder = ResNet(
                "bottleneck", [3, 4, 6, 3], [64, 128, 256, 512], spatial_dims=2, n_input_channels=in_channels,
                feed_forward=False,
            )  # fmt: skip
            self.lateral = nn.ModuleList([nn.Conv2d(c, out_channels, 1) for c in (256, 512, 1024, 2048)])
            self.smooth = nn.ModuleList([_conv(out_channels, out_channels) for _ in range(4)])
            self.stem = nn.Sequential(_conv(in_channels, out_channels), _conv(out_channels, out_channels))
            self.lpn_out = nn.Conv2d(out_channels, out_channels, 1)
            self.seg_out = nn.Conv2d(2 * out_channels, out_channels, 1)
        else:
            raise ValueError(f"backbone kind must be 'unet' or 'resnet50', got {kind!r}")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # hasattr rather than self.kind: TorchScript then compiles only the branch of the modules that exist
        if hasattr(self, "encoder"):
            return self._resnet50_features(x)
        return self._unet_features(x)

    def _unet_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        skips: list[torch.Tensor] = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        y = skips[-1]
        outs = {len(skips) - 1: y}
        for i in range(len(skips) - 2, -1, -1):
            y = F.interpolate(y, size=skips[i].shape[-2:], mode="nearest")
            up: _Layer = self.up[i]
            y = up.forward(torch.cat([y, skips[i]], dim=1))
            outs[i] = y
        return {"lpn": self.lpn_out(outs[self.lpn_level]), "seg": self.seg_out(outs[0])}

    def _resnet50_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.encoder
        c2 = e.layer1(e.maxpool(e.act(e.bn1(e.conv1(x)))))
        c3 = e.layer2(c2)
        c4 = e.layer3(c3)
        feats = [c2, c3, c4, e.layer4(c4)]
        pyramid: list[torch.Tensor] = []
        top = feats[3]
        for i in range(3, -1, -1):  # top-down
            lateral: _Layer = self.lateral[i]
            smooth: _Layer = self.smooth[i]
            lat = lateral.forward(feats[i])
            top = lat if i == 3 else lat + F.interpolate(top, size=feats[i].shape[-2:], mode="nearest")
            pyramid.insert(0, smooth.forward(top))
        level = self.lpn_level - 2  # pyramid[0] is stride 4
        full = F.interpolate(pyramid[0], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"lpn": self.lpn_out(pyramid[level]), "seg": self.seg_out(torch.cat([full, self.stem(x)], dim=1))}


class LacssAuxNet(nn.Module):
    """Small, low field-of-view (5×5) boundary network: (B, C, H, W) image → (B, 1, H, W) cell-boundary logits.

    LACSS trains it against the boundaries of the main network's instances and uses it to constrain them back
    (:class:`cellseg_monai.losses.lacss.LacssLoss`); it is not used at inference.
    """

    def __init__(self, in_channels: int = 3, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def match_locations(
    gt: torch.Tensor, pred: torch.Tensor, scores: torch.Tensor, max_offset: float, min_score: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each GT location by the best-scoring prediction within ``max_offset`` pixels (LACSS training).

    Only predictions with ``score >= min_score`` count; a prediction claimed by several GT locations goes to the
    nearest of them, the others keep their GT location (no two cells share a window).

    Args:
        gt: (K, 2) GT (y, x); pred: (N, 2) predicted (y, x); scores: (N,) their scores.
        max_offset: search radius in pixels; 0 keeps every GT location.
        min_score: minimal score of a replacing prediction.

    Returns:
        ``(locations, replaced)``: (K, 2) locations and (K,) bool, True where a prediction replaced the GT.
    """
    none = torch.zeros(gt.shape[0], dtype=torch.bool, device=gt.device)
    if gt.shape[0] == 0 or pred.shape[0] == 0 or max_offset <= 0:
        return gt.clone(), none
    d2 = ((gt[:, None, :] - pred[None, :, :]) ** 2).sum(-1)  # (K, N)
    near = (d2 <= max_offset * max_offset) & (scores[None, :] >= min_score)
    masked = torch.where(near, scores[None, :].expand_as(d2), torch.full_like(d2, -float("inf")))
    best = masked.argmax(dim=1)
    replaced = near.any(dim=1)
    dist = d2[torch.arange(gt.shape[0], device=gt.device), best]
    for j in torch.unique(best[replaced]).tolist():
        claim = torch.nonzero(replaced & (best == j))[:, 0]
        if claim.numel() > 1:
            replaced[claim[claim != claim[torch.argmin(dist[claim])]]] = False
    loc = torch.where(replaced[:, None], pred[best], gt)
    return loc, replaced


class Lacss(nn.Module):
    """The LACSS network (see the module docstring for inputs and outputs).

    Args:
        in_channels: image channels.
        backbone: "unet" (default, CPU-sized) or "resnet50", or a ready :class:`LacssBackbone`-like module.
        features: "unet" channels per level.
        feature_channels: backbone output channels.
        lpn_stride: LPN grid stride in pixels.
        crop_size: segmentor window side S in pixels (LACSS: 96).
        seg_hidden: segmentor channels.
        seg_stride: the segmentor FCN runs at this stride (1 = full resolution; 2 = 4× cheaper, logits upsampled).
        nms_distance: min distance in pixels between two kept proposals (inference).
        score_threshold: minimal proposal score in [0, 1] (inference).
        top_k: best proposals kept before NMS; max_instances: cap after NMS.
        mask_threshold: mask probability threshold in (0, 1).
        min_area: instances smaller than this (after overlap resolution) are removed.
        max_offset: training: radius in pixels within which the best-scoring prediction replaces a GT location.
        use_auxnet: build the training-only boundary network.
        seg_chunk: windows segmented per chunk at inference (small: the chunk's activations stay in the CPU caches).
    """

    def __init__(
        self,
        in_channels: int = 3,
        backbone: str | nn.Module = "unet",
        features: tuple[int, ...] | list[int] = (16, 32, 64, 128),
        feature_channels: int = 32,
        lpn_stride: int = 4,
        crop_size: int = 96,
        seg_hidden: int = 32,
        seg_stride: int = 1,
        nms_distance: float = 4.0,
        score_threshold: float = 0.5,
        top_k: int = 2000,
        max_instances: int = 2000,
        mask_threshold: float = 0.5,
        min_area: int = 4,
        max_offset: float = 8.0,
        use_auxnet: bool = True,
        seg_chunk: int = 16,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            backbone = LacssBackbone(in_channels, backbone, features, feature_channels, lpn_stride)
        self.backbone = backbone
        self.lpn_stride = int(getattr(backbone, "lpn_stride", lpn_stride))
        self.size_divisor = int(getattr(backbone, "size_divisor", lpn_stride))
        self.lpn = LocationProposalHead(feature_channels)
        self.segmentor = LacssSegmentor(feature_channels, seg_hidden, crop_size, seg_stride)
        if self.size_divisor % seg_stride:
            raise ValueError(f"seg_stride {seg_stride} must divide the backbone's size divisor {self.size_divisor}")
        self.auxnet = LacssAuxNet(in_channels) if use_auxnet else None
        self.nms_distance, self.score_threshold = float(nms_distance), float(score_threshold)
        self.top_k, self.max_instances = top_k, max_instances
        self.mask_threshold, self.min_area = float(mask_threshold), int(min_area)
        self.max_offset, self.seg_chunk = float(max_offset), int(seg_chunk)

    def _pad(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2], image.shape[-1]
        d = self.size_divisor
        return F.pad(image, (0, (-w) % d, 0, (-h) % d))

    def forward(self, image: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor | dict[str, Any]:
        """(B, C, H, W) image → (B, 2, H, W) [labels, score]; in training with ``points`` (B, 1, H, W) → dict.

        Under TorchScript (``torch.jit.script``, e.g. ``ckpt_export``) only the inference path is compiled: the
        training dict holds Python values TorchScript cannot type, and exported networks only infer."""
        if image.ndim != 4:
            raise ValueError(f"Lacss expects a (B, C, H, W) image, got shape {shape_repr(image)}")
        h, w = image.shape[-2], image.shape[-1]
        x = self._pad(image)
        feats = self.backbone(x)
        logits, offsets = self.lpn(feats["lpn"])
        projected = self.segmentor.project_features(feats["seg"])
        if not torch.jit.is_scripting() and self.training and points is not None:
            return self._train_outputs(x, logits, offsets, projected, points)
        return self._infer(logits, offsets, projected, (image.shape[0], x.shape[-2], x.shape[-1]))[..., :h, :w]

    def _train_outputs(
        self,
        x: torch.Tensor,
        logits: torch.Tensor,
        offsets: torch.Tensor,
        projected: torch.Tensor,
        points: torch.Tensor,
    ) -> dict[str, Any]:
        h, w = points.shape[-2:]
        pmap = self._pad(points.float())[:, 0]
        nz = torch.nonzero(pmap > 0)  # (K, 3): b, y, x
        batch_index, gt = nz[:, 0], nz[:, 1:].float()
        point_ids = pmap[nz[:, 0], nz[:, 1], nz[:, 2]].long()
        locations = gt.clone()
        with torch.no_grad():
            # float32 locations even under a bfloat16 training autocast (bfloat16 steps 0.5 px at 64-128 px)
            pred_loc, pred_score = decode_lpn(torch.sigmoid(logits.float()), offsets.float(), self.lpn_stride)
            for b in range(x.shape[0]):
                sel = batch_index == b
                if sel.any():
                    locations[sel] = match_locations(
                        gt[sel], pred_loc[b], pred_score[b], self.max_offset, self.score_threshold
                    )[0]
        centers = self.segmentor.snap(locations)
        seg_logits = self.segmentor.segment(projected, batch_index, centers)
        out: dict[str, Any] = {
            "lpn_logits": logits,
            "lpn_offsets": offsets,
            "lpn_stride": self.lpn_stride,
            "seg_logits": seg_logits,
            "batch_index": batch_index,
            "centers": centers,
            "gt_points": gt,
            "point_ids": point_ids,
            "image_shape": (h, w),
            "padded_shape": tuple(x.shape[-2:]),
        }
        out["aux_logits"] = self.auxnet(x) if self.auxnet is not None else None
        return out

    def _infer(
        self, logits: torch.Tensor, offsets: torch.Tensor, projected: torch.Tensor, shape: tuple[int, int, int]
    ) -> torch.Tensor:
        with torch.no_grad():  # a context, not the decorator: TorchScript compiles it
            # float32 scores and locations even when the network ran in reduced precision (autocast): fewer score
            # ties in NMS and ranking, sub-pixel locations
            loc, score = decode_lpn(torch.sigmoid(logits.float()), offsets.float(), self.lpn_stride)
            b, h, w = shape
            bidx: list[torch.Tensor] = []
            centers: list[torch.Tensor] = []
            scores: list[torch.Tensor] = []
            for i in range(b):
                inside = (
                    (loc[i, :, 0] > -0.5) & (loc[i, :, 0] < h - 0.5) & (loc[i, :, 1] > -0.5) & (loc[i, :, 1] < w - 0.5)
                )
                cand = torch.nonzero(inside)[:, 0]
                keep = cand[
                    torch_distance_nms(
                        loc[i, cand],
                        score[i, cand],
                        self.nms_distance,
                        self.score_threshold,
                        self.top_k,
                        self.max_instances,
                    )
                ]
                bidx.append(torch.full((keep.numel(),), i, dtype=torch.int64, device=loc.device))
                centers.append(self.segmentor.snap(loc[i, keep]))
                scores.append(score[i, keep])
            bidx_t, centers_t, scores_t = torch.cat(bidx), torch.cat(centers), torch.cat(scores)
            mask_t = self.segmentor.segment_masks(projected, bidx_t, centers_t, self.mask_threshold, self.seg_chunk)
            labels, score_map = paste_instances(mask_t, bidx_t, centers_t, scores_t, shape, self.min_area)
            return torch.stack([labels.float(), score_map], dim=1)
