"""Mask R-CNN (He et al., ICCV 2017) for nuclei, on ``monai.apps.detection`` parts, with Feng et al.'s additions.

Parts: a small convolutional backbone (CPU-sized by default, trained from scratch) + MONAI's
``FeaturePyramidNetwork`` (levels P2..P4 at strides 4, 8, 16), optional decomposed self-attention on each FPN level,
an RPN on MONAI's ``AnchorGenerator`` / ``BoxCoder`` / ``Matcher`` / ``HardNegativeSampler`` with
``monai.data.box_utils`` IoU (NMS: :func:`nms`, MONAI's greedy NMS from one IoU matrix), a two-FC box head and a
four-conv mask head on RoIAlign features (:func:`cellseg_monai.networks.blocks.roi_align.roi_align`), and
optionally the centerness + box module of Feng et al. (:class:`cellseg_monai.networks.centerness.CenternessModule`)
on P2.

Partially labelled exemplars (Feng et al.): in training, negatives (anchors and proposals matched to no labelled
nucleus) whose IoU with a nucleus found by the centerness module is >= ``ignore_iou`` are ignored instead of
sampled as background; in inference the module's detections are added to the RPN proposals.

``forward(images, labels=None)``:

- training (``self.training`` and ``labels`` given): returns a dict of predictions paired with their sampled targets
  for :class:`cellseg_monai.losses.mask_rcnn.MaskRCNNLoss` (see :meth:`MaskRCNN.forward`);
- inference: returns ONE tensor (B, 2, H, W): channel 0 instance labels (0 background, 1..N by decreasing score),
  channel 1 the score of the instance at each pixel (0 on background).

Boxes are ``monai.apps.detection`` ``StandardMode`` with ``ij`` indexing: ``(y0, x0, y1, x1)`` in image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.apps.detection.utils.anchor_utils import AnchorGenerator
from monai.apps.detection.utils.ATSS_matcher import Matcher
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.apps.detection.utils.hard_negative_sampler import HardNegativeSampler
from monai.data.box_utils import box_iou
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
from torch import nn

from cellseg_monai.networks.blocks.box_ops import box_iou as script_box_iou
from cellseg_monai.networks.blocks.box_ops import decode_boxes
from cellseg_monai.networks.blocks.decomposed_attention import DecomposedSelfAttention
from cellseg_monai.networks.blocks.roi_align import roi_align
from cellseg_monai.networks.centerness import CenternessModule, ignore_matched_negatives, instance_boxes
from cellseg_monai.postprocessing.mask_paste import paste_masks
from cellseg_monai.torchscript import shape_repr

__all__ = ["IoUMatcher", "MaskRCNN", "SmallBackbone", "nms"]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int = -1) -> torch.Tensor:
    """Greedy NMS with the same result as ``monai.data.box_utils.non_max_suppression``, from one IoU matrix.

    MONAI's NMS recomputes (and re-validates) the IoU of each kept box against the rest in Python; on CPU with a few
    hundred kept proposals that dominated the training step. Here the (K, K) matrix comes from ``box_iou`` (MONAI's,
    in its TorchScript-compatible form :func:`~cellseg_monai.networks.blocks.box_ops.box_iou`) once and the greedy
    pass only reads rows of it (on the CPU).

    Args:
        boxes: (K, 4) boxes; scores: (K,); iou_threshold: a box is dropped when its IoU with a kept, higher-scoring
            box is > this; max_keep: keep at most this many (-1: all).

    Returns:
        (N,) int64 indices of the kept boxes, by decreasing score.
    """
    if boxes.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    rows = (script_box_iou(boxes[order], boxes[order]) > iou_threshold).cpu()
    suppressed = torch.zeros(order.numel(), dtype=torch.bool)
    keep: list[int] = []
    for i in range(order.numel()):
        if bool(suppressed[i]):
            continue
        keep.append(i)
        if max_keep > 0 and len(keep) >= max_keep:
            break
        suppressed |= rows[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


class IoUMatcher(Matcher):
    """Faster R-CNN IoU matching on MONAI's ``Matcher`` interface.

    An anchor/proposal matches the box of highest IoU when that IoU is >= ``high``; below ``low`` it is background
    (``BELOW_LOW_THRESHOLD``), in between ignored (``BETWEEN_THRESHOLDS``). With ``allow_low_quality_matches`` each
    box also keeps the anchors of its highest IoU (Ren et al., Faster R-CNN), so small nuclei always get an anchor.
    """

    def __init__(self, high: float = 0.7, low: float = 0.3, allow_low_quality_matches: bool = True) -> None:
        super().__init__(similarity_fn=box_iou)
        if low > high:
            raise ValueError(f"low ({low}) must be <= high ({high})")
        self.high, self.low, self.allow_low_quality_matches = high, low, allow_low_quality_matches

    def compute_matches(
        self, boxes: torch.Tensor, anchors: torch.Tensor, num_anchors_per_level: Sequence[int], num_anchors_per_loc: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        iou = torch.as_tensor(self.similarity_fn(boxes, anchors))  # (N, M)
        vals, matches = iou.max(dim=0)
        out = matches.clone()
        out[vals < self.high] = self.BETWEEN_THRESHOLDS
        out[vals < self.low] = self.BELOW_LOW_THRESHOLD
        if self.allow_low_quality_matches:
            best = iou.max(dim=1, keepdim=True).values
            gt_idx, anchor_idx = torch.nonzero((iou == best) & (best > 0), as_tuple=True)
            out[anchor_idx] = matches[anchor_idx]
        return iou, out


class SmallBackbone(nn.Module):
    """Conv-BN-ReLU encoder: a stride-2 stem then stages at strides 4, 8, 16 (C2, C3, C4).

    Args:
        in_channels: image channels.
        channels: (stem, C2, C3, C4) widths.

    ``forward(x)`` returns a dict ``{"c2", "c3", "c4"}`` (in that order) of (B, channels[i], H / 2^(i+1), W / 2^(i+1)).
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"channels must give (stem, C2, C3, C4) widths, got {channels}")

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.out_channels = list(channels[1:])
        self.stem = stage(in_channels, channels[0])
        self.stages = nn.ModuleList([stage(channels[i], channels[i + 1]) for i in range(3)])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        out: dict[str, torch.Tensor] = {}
        for i, s in enumerate(self.stages):
            x = s(x)
            out[f"c{i + 2}"] = x
        return out


class MaskRCNN(nn.Module):
    """Mask R-CNN with optional decomposed attention and centerness module (Feng et al.).

    Args:
        in_channels: image channels.
        backbone_channels: (stem, C2, C3, C4) widths of :class:`SmallBackbone`.
        fpn_channels: channels of the FPN levels and heads.
        anchor_sizes: anchor sides in image pixels per FPN level (P2, P3, P4).
        aspect_ratios: anchor aspect ratios (h / w), the same on every level.
        use_attention: decomposed self-attention on every FPN level.
        attention_channels: basis and value channels of the attention (64 in the paper).
        use_centerness: the centerness + box module (ignoring in training, extra proposals in inference).
        nucleus_size: initial anchor side of the centerness module, in pixels (then the running median size).
        centerness_threshold: centerness probability above which the module detects a nucleus (0.95).
        ignore_iou: negatives with IoU >= this with a module detection are ignored.
        rpn_batch_size, rpn_positive_fraction: RPN anchors sampled per image and their positive fraction.
        rpn_pre_nms_top_n, rpn_post_nms_top_n: proposals kept before / after NMS per image, (train, test).
        rpn_nms_threshold: IoU of the proposal NMS.
        box_batch_size, box_positive_fraction: proposals sampled per image for the box head.
        box_fg_iou: proposal IoU with a labelled nucleus to be positive (below: negative).
        representation_size: width of the box head's two FC layers.
        score_threshold, detection_nms_threshold, detections_per_image: inference box filtering.
        mask_threshold: mask probability threshold when pasting masks.
        min_area: instances with fewer pixels are dropped in inference.
        size_divisible: inputs are zero-padded to a multiple of this (and outputs cropped back).
        pretrained_path: a local state-dict file (``.pt``) loaded into the network (``strict=False``: heads that do
            not match are kept from the initialisation); None trains from scratch.
    """

    __constants__ = ["box_roi_size", "mask_roi_size"]  # class attributes TorchScript reads as constants
    box_roi_size = 7
    mask_roi_size = 14

    def __init__(
        self,
        in_channels: int = 3,
        backbone_channels: Sequence[int] = (16, 32, 64, 128),
        fpn_channels: int = 64,
        anchor_sizes: Sequence[Sequence[int]] = ((8, 16), (24, 32), (48, 64)),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        use_attention: bool = True,
        attention_channels: int = 64,
        use_centerness: bool = True,
        nucleus_size: float = 16.0,
        centerness_threshold: float = 0.95,
        ignore_iou: float = 0.5,
        rpn_batch_size: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_pre_nms_top_n: Sequence[int] = (1000, 2000),
        rpn_post_nms_top_n: Sequence[int] = (256, 500),
        rpn_nms_threshold: float = 0.7,
        box_batch_size: int = 128,
        box_positive_fraction: float = 0.25,
        box_fg_iou: float = 0.5,
        representation_size: int = 256,
        score_threshold: float = 0.05,
        detection_nms_threshold: float = 0.5,
        detections_per_image: int = 400,
        mask_threshold: float = 0.5,
        min_area: int = 4,
        size_divisible: int = 16,
        pretrained_path: str | None = None,
    ) -> None:
        super().__init__()
        if len(anchor_sizes) != 3:
            raise ValueError(f"anchor_sizes needs one tuple per FPN level (P2, P3, P4), got {anchor_sizes}")
        self.backbone = SmallBackbone(in_channels, backbone_channels)
        self.fpn = FeaturePyramidNetwork(2, self.backbone.out_channels, fpn_channels)
        self.strides = (4, 8, 16)
        self.attention = nn.ModuleList(
            [DecomposedSelfAttention(fpn_channels, attention_channels, attention_channels) for _ in range(3)]
            if use_attention
            else []
        )
        self.anchor_generator = AnchorGenerator(
            sizes=tuple(tuple(int(s) for s in level) for level in anchor_sizes),
            aspect_ratios=tuple(tuple(float(a) for a in aspect_ratios) for _ in anchor_sizes),
            indexing="ij",
        )
        n_anchor = self.anchor_generator.num_anchors_per_location()
        if len(set(n_anchor)) != 1:
            raise ValueError("every FPN level needs the same number of anchors (sizes × aspect ratios)")
        self.num_anchors = n_anchor[0]
        self.rpn_conv = nn.Sequential(nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.rpn_cls = nn.Conv2d(fpn_channels, self.num_anchors, 1)
        self.rpn_reg = nn.Conv2d(fpn_channels, 4 * self.num_anchors, 1)
        res = self.box_roi_size
        self.box_head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(fpn_channels * res * res, representation_size),
            nn.ReLU(inplace=True),
            nn.Linear(representation_size, representation_size),
            nn.ReLU(inplace=True),
        )
        self.box_cls = nn.Linear(representation_size, 2)
        self.box_reg = nn.Linear(representation_size, 4)
        layers: list[nn.Module] = []
        for _ in range(4):
            layers += [nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(fpn_channels, fpn_channels, 2, stride=2), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(fpn_channels, 1, 1)]
        self.mask_head = nn.Sequential(*layers)
        for m in (self.rpn_cls, self.rpn_reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.box_cls.weight, std=0.01)
        nn.init.normal_(self.box_reg.weight, std=0.001)
        nn.init.zeros_(self.box_cls.bias)
        nn.init.zeros_(self.box_reg.bias)
        self.centerness = (
            CenternessModule(fpn_channels, fpn_channels, nucleus_size, threshold=centerness_threshold)
            if use_centerness
            else None
        )
        self.use_centerness = bool(use_centerness)
        self.ignore_iou = float(ignore_iou)
        # BoxCoder encodes the training targets; inference decodes with box_ops.decode_boxes (same numbers, and
        # TorchScript-compatible) and these weights
        self.rpn_weights, self.box_weights = (1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)
        self.rpn_coder = BoxCoder(weights=self.rpn_weights)
        self.box_coder = BoxCoder(weights=self.box_weights)
        self.rpn_matcher = IoUMatcher(0.7, 0.3, allow_low_quality_matches=True)
        self.box_matcher = IoUMatcher(box_fg_iou, box_fg_iou, allow_low_quality_matches=False)
        self.rpn_sampler = HardNegativeSampler(
            rpn_batch_size, rpn_positive_fraction, min_neg=rpn_batch_size // 4, pool_size=20
        )
        self.box_sampler = HardNegativeSampler(
            box_batch_size, box_positive_fraction, min_neg=box_batch_size // 4, pool_size=20
        )
        self.rpn_pre_nms_top_n = tuple(int(v) for v in rpn_pre_nms_top_n)
        self.rpn_post_nms_top_n = tuple(int(v) for v in rpn_post_nms_top_n)
        self.rpn_nms_threshold = float(rpn_nms_threshold)
        self.score_threshold = float(score_threshold)
        self.detection_nms_threshold = float(detection_nms_threshold)
        self.detections_per_image = int(detections_per_image)
        self.mask_threshold = float(mask_threshold)
        self.min_area = int(min_area)
        self.size_divisible = int(size_divisible)
        if pretrained_path:
            self.load_pretrained(pretrained_path)

    def load_pretrained(self, path: str) -> None:
        """Load a local state dict (``weights_only``); keys of other shapes are skipped, the rest must exist."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"pretrained_path {p} is not a file (no weights are downloaded)")
        state = torch.load(p, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        own = self.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ValueError(f"{p}: no tensor matches this network's parameter names and shapes")
        self.load_state_dict(usable, strict=False)

    # ------------------------------------------------------------------ features, RPN and proposals
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """FPN levels [P2, P3, P4] (B, fpn_channels, H / s, W / s), s = 4, 8, 16, with attention when enabled."""
        feats = list(self.fpn(self.backbone(images)).values())
        if len(self.attention) > 0:
            feats = [att(feats[i]) for i, att in enumerate(self.attention)]
        return feats

    def rpn(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectness logits (B, A) and deltas (B, A, 4) in the anchor order of MONAI's ``AnchorGenerator``."""
        logits: list[torch.Tensor] = []
        deltas: list[torch.Tensor] = []
        for f in feats:
            t = self.rpn_conv(f)
            b, _, h, w = t.shape
            logits.append(self.rpn_cls(t).permute(0, 2, 3, 1).reshape(b, -1))
            deltas.append(
                self.rpn_reg(t).reshape(b, self.num_anchors, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
            )
        return torch.cat(logits, 1), torch.cat(deltas, 1)

    def proposals(
        self,
        anchors: torch.Tensor,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        image_size: tuple[int, int],
    ) -> list[torch.Tensor]:
        """Top-scoring decoded anchors per image after NMS, (K_b, 4), clipped to ``image_size``."""
        with torch.no_grad():  # a context, not the decorator: TorchScript compiles it
            if self.training:
                pre, post = self.rpn_pre_nms_top_n[0], self.rpn_post_nms_top_n[0]
            else:
                pre, post = self.rpn_pre_nms_top_n[1], self.rpn_post_nms_top_n[1]
            out: list[torch.Tensor] = []
            for b in range(logits.shape[0]):
                score, idx = logits[b].topk(min(pre, logits.shape[1]))
                boxes = self._clip(decode_boxes(deltas[b, idx].float(), anchors[idx], self.rpn_weights), image_size)
                keep = self._valid(boxes)
                boxes, score = boxes[keep], score[keep]
                keep = nms(boxes, score, self.rpn_nms_threshold, post)
                out.append(boxes[keep])
            return out

    @staticmethod
    def _clip(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        boxes = boxes.clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image_size[0])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image_size[1])
        return boxes

    @staticmethod
    def _valid(boxes: torch.Tensor, min_side: float = 1.0) -> torch.Tensor:
        return ((boxes[:, 2] - boxes[:, 0]) >= min_side) & ((boxes[:, 3] - boxes[:, 1]) >= min_side)

    def pool(self, feats: list[torch.Tensor], boxes: list[torch.Tensor], size: int) -> torch.Tensor:
        """Multi-level RoIAlign: a box of side s = sqrt(area) reads P2 when s < 32, P3 when s < 64, else P4.

        Returns (sum K_b, C, size, size) in the order of the concatenated ``boxes``.
        """
        rois = torch.cat([torch.cat([torch.full_like(bx[:, :1], b), bx], 1) for b, bx in enumerate(boxes)], 0)
        out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1], size, size))
        if rois.shape[0] == 0:
            return out
        side = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).clamp(min=1e-6).sqrt()
        level = torch.floor(torch.log2(side / 32.0)).long().add(1).clamp(0, len(feats) - 1)
        for lv, f in enumerate(feats):
            sel = torch.nonzero(level == lv).squeeze(1)
            if sel.numel() > 0:
                scale = 1.0 / self.strides[lv]
                out = out.index_copy(0, sel, roi_align(f, rois[sel], size, scale, sampling_ratio=2, aligned=True))
        return out

    def box_predictions(
        self, feats: list[torch.Tensor], boxes: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Box-head class logits (K, 2) (background, nucleus) and deltas (K, 4) for the concatenated ``boxes``."""
        h = self.box_head(self.pool(feats, boxes, self.box_roi_size))
        return self.box_cls(h), self.box_reg(h)

    def mask_logits(self, feats: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        """Mask logits (K, 28, 28) for the concatenated ``boxes``."""
        return self.mask_head(self.pool(feats, boxes, self.mask_roi_size))[:, 0]

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor | dict[str, Any]:
        """See the module docstring.

        Args:
            images: (B, C, H, W) float images in about [0, 1], any H and W.
            labels: (B, 1, H, W) integer instance labels (the labelled exemplars; unlabelled nuclei are 0), needed in
                training.

        Returns:
            Inference: (B, 2, H, W) float tensor (labels, per-pixel instance score). Training: a dict with

            - ``rpn_logits`` (S,), ``rpn_labels`` (S,) in {0, 1}: sampled anchors; ``rpn_deltas``, ``rpn_targets``
              (P, 4): their positives;
            - ``box_logits`` (R, 2), ``box_labels`` (R,) in {0, 1}; ``box_deltas``, ``box_targets`` (Q, 4);
            - ``mask_logits``, ``mask_targets`` (Q, 28, 28) (targets in {0, 1});
            - with the centerness module: ``centerness_logits`` (B, 1, h, w), ``centerness_deltas`` (B, 4, h, w),
              ``centerness_stride`` (int), ``centerness_anchor_size`` (2,), ``ignored_rpn`` and ``ignored_box``
              (number of negatives turned into ignored samples).

            Under TorchScript (``torch.jit.script``, e.g. ``ckpt_export``) only inference is compiled: the training
            dict holds Python values TorchScript cannot type, and exported networks only infer.
        """
        if images.ndim != 4:
            raise ValueError(f"MaskRCNN expects (B, C, H, W) images, got {shape_repr(images)}")
        h, w = images.shape[-2], images.shape[-1]
        d = self.size_divisible
        ph, pw = (d - h % d) % d, (d - w % d) % d
        x = F.pad(images, (0, pw, 0, ph)) if ph > 0 or pw > 0 else images
        feats = self.features(x)
        anchors = self.anchor_generator(x, feats)[0]
        rpn_logits, rpn_deltas = self.rpn(feats)
        proposals = self.proposals(anchors, rpn_logits.detach(), rpn_deltas.detach(), (h, w))
        c_logits: torch.Tensor | None = None
        c_deltas: torch.Tensor | None = None
        found = [images.new_zeros((0, 4))] * images.shape[0]
        if self.centerness is not None:
            c_logits, c_deltas = self.centerness(feats[0])
            found = [det[0] for det in self.centerness.detect(c_logits.detach(), c_deltas.detach(), 4, (h, w))]
        if not torch.jit.is_scripting() and self.training and labels is not None:
            return self._training_outputs(
                feats, anchors, rpn_logits, rpn_deltas, proposals, found, labels, c_logits, c_deltas
            )
        if self.training:
            raise ValueError("MaskRCNN in training mode needs the instance labels: forward(images, labels)")
        return self._inference(feats, proposals, found, (h, w))

    def _training_outputs(
        self,
        feats: list[torch.Tensor],
        anchors: torch.Tensor,
        rpn_logits: torch.Tensor,
        rpn_deltas: torch.Tensor,
        proposals: list[torch.Tensor],
        found: list[torch.Tensor],
        labels: torch.Tensor,
        c_logits: torch.Tensor | None,
        c_deltas: torch.Tensor | None,
    ) -> dict:
        if labels.ndim != 4 or labels.shape[1] != 1 or labels.shape[0] != rpn_logits.shape[0]:
            raise ValueError(f"labels must be (B, 1, H, W) matching the images, got {tuple(labels.shape)}")
        gts = [instance_boxes(lab[0]) for lab in labels]
        if self.centerness is not None:
            self.centerness.update_anchor_size(torch.cat([g[0] for g in gts], 0))
        out: dict = {}
        # ---- RPN: match anchors, ignore negatives on module detections, sample
        rpn_sel, rpn_lab, rpn_pos_d, rpn_pos_t, n_ignored_rpn = [], [], [], [], 0
        for b, ((gt, _), pred) in enumerate(zip(gts, found, strict=True)):
            _, matches = self.rpn_matcher(gt.to(anchors), anchors, [], self.num_anchors)
            lab = torch.where(matches >= 0, 1, torch.where(matches == Matcher.BETWEEN_THRESHOLDS, -1, 0))
            ignored = ignore_matched_negatives(lab, anchors, pred, self.ignore_iou)
            n_ignored_rpn += int(((ignored == -1) & (lab == 0)).sum())
            pos, neg = self.rpn_sampler.select_samples_per_img(ignored, torch.sigmoid(rpn_logits[b].detach()))
            sel = torch.nonzero(pos | neg).squeeze(1)
            rpn_sel.append(rpn_logits[b, sel])
            rpn_lab.append(pos[sel].float())
            p = torch.nonzero(pos).squeeze(1)
            rpn_pos_d.append(rpn_deltas[b, p])
            rpn_pos_t.append(
                self.rpn_coder.encode_single(gt.to(anchors)[matches[p]], anchors[p]) if p.numel() else anchors[:0]
            )
        out.update(
            rpn_logits=torch.cat(rpn_sel),
            rpn_labels=torch.cat(rpn_lab),
            rpn_deltas=torch.cat(rpn_pos_d),
            rpn_targets=torch.cat(rpn_pos_t),
        )
        # ---- box head: proposals + labelled boxes, match, ignore, sample
        sampled, box_lab, pos_boxes, pos_targets, pos_ids = [], [], [], [], []
        n_ignored_box = 0
        for (gt, ids), pred, prop in zip(gts, found, proposals, strict=True):
            gt = gt.to(prop)
            cand = torch.cat([prop, gt], 0)
            _, matches = self.box_matcher(gt, cand, [], 1)
            lab = (matches >= 0).long()
            ignored = ignore_matched_negatives(lab, cand, pred, self.ignore_iou)
            n_ignored_box += int(((ignored == -1) & (lab == 0)).sum())
            pos, neg = self.box_sampler.select_samples_per_img(ignored, torch.zeros(cand.shape[0], device=cand.device))
            sel = torch.nonzero(pos | neg).squeeze(1)
            sampled.append(cand[sel])
            box_lab.append(pos[sel].long())
            p = torch.nonzero(pos).squeeze(1)
            pos_boxes.append(cand[p])
            pos_targets.append(self.box_coder.encode_single(gt[matches[p]], cand[p]) if p.numel() else cand[:0])
            pos_ids.append(ids[matches[p].cpu()] if p.numel() else ids[:0])
        box_logits, box_deltas = self.box_predictions(feats, sampled)
        is_pos = torch.cat(box_lab).bool()
        out.update(
            box_logits=box_logits,
            box_labels=torch.cat(box_lab),
            box_deltas=box_deltas[is_pos],
            box_targets=torch.cat(pos_targets),
        )
        # ---- mask head on the positive proposals; targets = the matched nucleus mask resampled into the box
        out["mask_logits"] = self.mask_logits(feats, pos_boxes)
        m = 2 * self.mask_roi_size
        targets = []
        for b, (bx, ids) in enumerate(zip(pos_boxes, pos_ids, strict=True)):
            if bx.shape[0] == 0:
                continue
            masks = (labels[b, 0][None] == ids.to(labels.device)[:, None, None]).float()[:, None]
            rois = torch.cat([torch.arange(bx.shape[0], device=bx.device, dtype=bx.dtype)[:, None], bx], 1)
            targets.append(
                (roi_align(masks, rois.to(masks), m, 1.0, sampling_ratio=1, aligned=True)[:, 0] >= 0.5).float()
            )
        out["mask_targets"] = torch.cat(targets) if targets else out["mask_logits"].new_zeros((0, m, m))
        if self.centerness is not None:
            out.update(
                centerness_logits=c_logits,
                centerness_deltas=c_deltas,
                centerness_stride=self.strides[0],
                centerness_anchor_size=self.centerness.anchor_size.clone(),
            )
        out.update(ignored_rpn=n_ignored_rpn, ignored_box=n_ignored_box)
        return out

    def _inference(
        self,
        feats: list[torch.Tensor],
        proposals: list[torch.Tensor],
        found: list[torch.Tensor],
        size: tuple[int, int],
    ) -> torch.Tensor:
        with torch.no_grad():  # a context, not the decorator: TorchScript compiles it
            cand = [torch.cat([p, found[i].to(p)], 0) for i, p in enumerate(proposals)]
            logits, deltas = self.box_predictions(feats, cand)
            scores_all = logits.softmax(-1)[:, 1].split([c.shape[0] for c in cand])
            deltas_all = deltas.split([c.shape[0] for c in cand])
            boxes_out: list[torch.Tensor] = []
            scores_out: list[torch.Tensor] = []
            for c, s, dl in zip(cand, scores_all, deltas_all, strict=True):
                boxes = self._clip(decode_boxes(dl.float(), c, self.box_weights), size) if c.shape[0] > 0 else c
                keep = (s > self.score_threshold) & self._valid(boxes)
                boxes, s = boxes[keep], s[keep]
                keep = nms(boxes, s, self.detection_nms_threshold, self.detections_per_image)
                boxes_out.append(boxes[keep])
                scores_out.append(s[keep])
            masks = torch.sigmoid(self.mask_logits(feats, boxes_out)).split([b.shape[0] for b in boxes_out])
            result = feats[0].new_zeros((len(cand), 2, int(size[0]), int(size[1])))
            for b, bx in enumerate(boxes_out):
                lab, score = paste_masks(masks[b], bx, scores_out[b], size, self.mask_threshold, self.min_area)
                result[b, 0] = lab.to(result)
                result[b, 1] = score.to(result)
            return result
