"""Mask R-CNN (He et al., ICCV 2017) for nuclei, assembled from parts on ``monai.apps.detection``.

Parts, passed in (as MONAI's ``RetinaNetDetector`` takes its network and anchor generator; :meth:`MaskRCNN.build`
makes the defaults): a backbone (:class:`~cellseg_monai.networks.mask_rcnn.parts.SmallBackbone`, CPU-sized, trained
from scratch) + MONAI's ``FeaturePyramidNetwork`` (levels P2..P4 at strides 4, 8, 16), optionally one module per FPN
level that refines its features (Feng et al. use decomposed self-attention), MONAI's ``AnchorGenerator``, an
:class:`~cellseg_monai.networks.mask_rcnn.parts.RPNHead` (matching with MONAI's ``Matcher`` interface, sampling
with its ``HardNegativeSampler``, ``monai.data.box_utils`` IoU, NMS: :func:`~cellseg_monai.networks.mask_rcnn.nms`),
a :class:`~cellseg_monai.networks.mask_rcnn.parts.BoxHead` and a mask head on RoIAlign features
(:func:`~cellseg_monai.networks.mask_rcnn.roi_align.roi_align`).

The partially labelled exemplars of Feng et al. are a subclass,
:class:`~cellseg_monai.networks.mask_rcnn.PartialMaskRCNN`, which overrides the hooks :meth:`MaskRCNN.unlabelled_nuclei`,
:meth:`MaskRCNN.labelled_boxes` and :meth:`MaskRCNN.negatives_to_ignore`.

``forward(images, labels=None)``:

- training (``self.training`` and ``labels`` given): returns a dict of predictions paired with their sampled targets
  for :class:`cellseg_monai.losses.mask_rcnn.MaskRCNNLoss` (see :meth:`MaskRCNN.forward`);
- inference: returns ONE tensor (B, 2, H, W): channel 0 instance labels (0 background, 1..N by decreasing score),
  channel 1 the score of the instance at each pixel (0 on background).

Boxes are ``monai.apps.detection`` ``StandardMode`` with ``ij`` indexing: ``(y0, x0, y1, x1)`` in image pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.apps.detection.utils.anchor_utils import AnchorGenerator
from monai.apps.detection.utils.ATSS_matcher import Matcher
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
from torch import nn

from cellseg_monai.networks.mask_rcnn.box_ops import decode_boxes
from cellseg_monai.networks.mask_rcnn.decomposed_attention import DecomposedSelfAttention
from cellseg_monai.networks.mask_rcnn.matching import nms
from cellseg_monai.networks.mask_rcnn.parts import BoxHead, MaskHead, RPNHead, SmallBackbone
from cellseg_monai.networks.mask_rcnn.roi_align import roi_align
from cellseg_monai.postprocessing.mask_paste import paste_masks
from cellseg_monai.targets.boxes import instance_boxes
from cellseg_monai.torchscript import shape_repr

__all__ = ["MaskRCNN", "default_parts"]


def default_parts(
    in_channels: int = 3,
    backbone_channels: Sequence[int] = (16, 32, 64, 128),
    fpn_channels: int = 64,
    anchor_sizes: Sequence[Sequence[int]] = ((8, 16), (24, 32), (48, 64)),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    attention_channels: int | None = None,
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
) -> dict[str, Any]:
    """The default parts of :class:`MaskRCNN`, as constructor keyword arguments.

    Args:
        in_channels: image channels.
        backbone_channels: (stem, C2, C3, C4) widths of :class:`SmallBackbone`.
        fpn_channels: channels of the FPN levels and heads.
        anchor_sizes: anchor sides in image pixels per FPN level (P2, P3, P4).
        aspect_ratios: anchor aspect ratios (h / w), the same on every level.
        attention_channels: basis and value channels of a :class:`DecomposedSelfAttention` on every FPN level (64 in
            Feng et al.); None: no attention.
        rpn_*: :class:`RPNHead` settings; box_*, representation_size, score_threshold, detection_nms_threshold,
            detections_per_image: :class:`BoxHead` settings.

    The parts are made in a fixed order (and the heads' output layers initialised last), so that under a given
    ``torch.manual_seed`` the initial weights do not depend on how the network is assembled.
    """
    if len(anchor_sizes) != 3:
        raise ValueError(f"anchor_sizes needs one tuple per FPN level (P2, P3, P4), got {anchor_sizes}")
    backbone = SmallBackbone(in_channels, backbone_channels)
    fpn = FeaturePyramidNetwork(2, backbone.out_channels, fpn_channels)
    attention = (
        [DecomposedSelfAttention(fpn_channels, attention_channels, attention_channels) for _ in range(3)]
        if attention_channels
        else None
    )
    anchor_generator = AnchorGenerator(
        sizes=tuple(tuple(int(s) for s in level) for level in anchor_sizes),
        aspect_ratios=tuple(tuple(float(a) for a in aspect_ratios) for _ in anchor_sizes),
        indexing="ij",
    )
    rpn_head = RPNHead(
        fpn_channels,
        anchor_generator.num_anchors_per_location()[0],
        rpn_batch_size,
        rpn_positive_fraction,
        rpn_pre_nms_top_n,
        rpn_post_nms_top_n,
        rpn_nms_threshold,
    )
    box_head = BoxHead(
        fpn_channels,
        MaskRCNN.box_roi_size,
        representation_size,
        box_batch_size,
        box_positive_fraction,
        box_fg_iou,
        score_threshold,
        detection_nms_threshold,
        detections_per_image,
    )
    mask_head = MaskHead(fpn_channels)
    rpn_head.init_weights()
    box_head.init_weights()
    return {
        "backbone": backbone,
        "fpn": fpn,
        "anchor_generator": anchor_generator,
        "rpn_head": rpn_head,
        "box_head": box_head,
        "mask_head": mask_head,
        "attention": attention,
    }


def match_on_device(matcher: Matcher, gt: torch.Tensor, samples: torch.Tensor, per_location: int) -> torch.Tensor:
    """``matcher``'s (A,) matched-box indices of ``samples`` for the boxes ``gt``, on the samples' device.

    MONAI's ``Matcher`` returns its all-background answer for an image without boxes on the CPU whatever the
    device; a crop with no labelled nucleus (common with partial labels) then broke GPU training in the sampler.
    """
    _, matches = matcher(gt, samples, [], per_location)
    return matches.to(samples.device)


class _AcceptsVersion1Arguments(type):
    """Metaclass of :class:`MaskRCNN` that keeps its version-1 call working: ``MaskRCNN(in_channels=3, ...,
    use_attention=True, use_centerness=True)`` (sizes and flags instead of parts, as bundle configs wrote it) goes
    to :func:`~cellseg_monai.networks.mask_rcnn.build_mask_rcnn`, with a ``DeprecationWarning``."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is MaskRCNN and not (args and isinstance(args[0], nn.Module)) and "backbone" not in kwargs:
            from cellseg_monai.networks.mask_rcnn.factory import build_mask_rcnn

            warnings.warn(
                "MaskRCNN(in_channels=..., use_centerness=...) is deprecated: use "
                "cellseg_monai.networks.mask_rcnn.build_mask_rcnn (same arguments), MaskRCNN.build or "
                "PartialMaskRCNN.build",
                DeprecationWarning,
                stacklevel=2,
            )
            return build_mask_rcnn(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class MaskRCNN(nn.Module, metaclass=_AcceptsVersion1Arguments):
    """Mask R-CNN from its parts (see the module docstring; :meth:`build` makes the defaults).

    Args:
        backbone: (B, C, H, W) images → dict of feature maps at ``strides``, with an ``out_channels`` list.
        fpn: dict of backbone maps → dict of FPN levels (P2, P3, P4), each with the heads' channels.
        anchor_generator: MONAI ``AnchorGenerator`` (``indexing="ij"``) with the same number of anchors per location
            on every level.
        rpn_head: the RPN layers and settings; its layers are registered here as ``rpn_conv``, ``rpn_cls``,
            ``rpn_reg``.
        box_head: the box-head layers and settings; registered as ``box_head`` (its trunk), ``box_cls``, ``box_reg``.
        mask_head: (K, C, 14, 14) RoIAlign features → (K, 1, 28, 28) mask logits, e.g. :class:`MaskHead`.
        attention: one module per FPN level applied to its features (shape-preserving), or None.
        strides: image pixels per feature pixel of the FPN levels.
        mask_threshold: mask probability threshold when pasting masks.
        min_area: instances with fewer pixels are dropped in inference.
        size_divisible: inputs are zero-padded to a multiple of this (and outputs cropped back).
    """

    __constants__ = ["box_roi_size", "mask_roi_size"]  # class attributes TorchScript reads as constants
    box_roi_size = 7
    mask_roi_size = 14

    def __init__(
        self,
        backbone: nn.Module,
        fpn: nn.Module,
        anchor_generator: AnchorGenerator,
        rpn_head: RPNHead,
        box_head: BoxHead,
        mask_head: nn.Module,
        attention: Sequence[nn.Module] | None = None,
        strides: Sequence[int] = (4, 8, 16),
        mask_threshold: float = 0.5,
        min_area: int = 4,
        size_divisible: int = 16,
    ) -> None:
        super().__init__()
        n_anchor = anchor_generator.num_anchors_per_location()
        if len(set(n_anchor)) != 1:
            raise ValueError("every FPN level needs the same number of anchors (sizes × aspect ratios)")
        if n_anchor[0] != rpn_head.num_anchors:
            raise ValueError(
                f"rpn_head predicts {rpn_head.num_anchors} anchors per location, the generator {n_anchor[0]}"
            )
        if box_head.roi_size != self.box_roi_size:
            raise ValueError(
                f"box_head must read {self.box_roi_size}×{self.box_roi_size} RoIs, got {box_head.roi_size}"
            )
        # registration order and names are those of the shipped weights (bundles/partial_maskrcnn/models/model.pt)
        self.backbone = backbone
        self.fpn = fpn
        self.strides = tuple(int(s) for s in strides)
        self.attention = nn.ModuleList(list(attention) if attention is not None else [])
        if len(self.attention) not in (0, len(self.strides)):
            raise ValueError(
                f"attention needs one module per FPN level ({len(self.strides)}), got {len(self.attention)}"
            )
        self.anchor_generator = anchor_generator
        self.num_anchors = int(n_anchor[0])
        self.rpn_conv, self.rpn_cls, self.rpn_reg = rpn_head.conv, rpn_head.cls, rpn_head.reg
        self.box_head, self.box_cls, self.box_reg = box_head.trunk, box_head.cls, box_head.reg
        self.mask_head = mask_head
        # BoxCoder encodes the training targets; inference decodes with box_ops.decode_boxes (same numbers, and
        # TorchScript-compatible) and these weights
        self.rpn_weights, self.box_weights = rpn_head.weights, box_head.weights
        self.rpn_coder, self.box_coder = rpn_head.coder, box_head.coder
        self.rpn_matcher, self.box_matcher = rpn_head.matcher, box_head.matcher
        self.rpn_sampler, self.box_sampler = rpn_head.sampler, box_head.sampler
        self.rpn_pre_nms_top_n = rpn_head.pre_nms_top_n
        self.rpn_post_nms_top_n = rpn_head.post_nms_top_n
        self.rpn_nms_threshold = rpn_head.nms_threshold
        self.score_threshold = box_head.score_threshold
        self.detection_nms_threshold = box_head.nms_threshold
        self.detections_per_image = box_head.detections_per_image
        self.mask_threshold = float(mask_threshold)
        self.min_area = int(min_area)
        self.size_divisible = int(size_divisible)

    @classmethod
    def build(
        cls,
        mask_threshold: float = 0.5,
        min_area: int = 4,
        size_divisible: int = 16,
        pretrained_path: str | None = None,
        **sizes: Any,
    ) -> MaskRCNN:
        """The network with :func:`default_parts` (``sizes`` are its arguments; no attention unless
        ``attention_channels`` is given).

        Args:
            mask_threshold, min_area, size_divisible: see the class.
            pretrained_path: a local state-dict file (``.pt``) loaded into the network (:meth:`load_pretrained`);
                None trains from scratch.
        """
        net = cls(
            **default_parts(**sizes), mask_threshold=mask_threshold, min_area=min_area, size_divisible=size_divisible
        )
        if pretrained_path:
            net.load_pretrained(pretrained_path)
        return net

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

    # ------------------------------------------------------------------ hooks of the partially labelled variant
    def unlabelled_nuclei(
        self, feats: list[torch.Tensor], image_size: tuple[int, int]
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Nuclei found without labels: per image (K_b, 4) boxes, ignored as negatives in training and added to the
        proposals in inference, plus the tensors that produced them (for the loss). Mask R-CNN: none."""
        side: dict[str, torch.Tensor] = {}
        return [feats[0].new_zeros((0, 4)) for _ in range(feats[0].shape[0])], side

    def labelled_boxes(self, labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image ``(boxes (N, 4), ids (N,))`` of the labelled instances of (B, 1, H, W) ``labels``."""
        return [instance_boxes(lab[0]) for lab in labels]

    def negatives_to_ignore(
        self, sample_labels: torch.Tensor, samples: torch.Tensor, found: torch.Tensor
    ) -> torch.Tensor:
        """``sample_labels`` (A,) (1 positive, 0 negative, -1 ignored) of ``samples`` (A, 4) with the negatives that
        should not be learnt as background set to -1, given the unlabelled nuclei ``found`` (P, 4). Mask R-CNN: all
        negatives are background."""
        return sample_labels

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
            - ``ignored_rpn`` and ``ignored_box``: number of negatives turned into ignored samples
              (:meth:`negatives_to_ignore`);
            - :class:`~cellseg_monai.networks.mask_rcnn.PartialMaskRCNN` adds its centerness module's outputs.

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
        anchors = self.anchor_generator(x, feats)[0].float()  # float32 boxes even under a bfloat16 autocast
        rpn_logits, rpn_deltas = self.rpn(feats)
        proposals = self.proposals(anchors, rpn_logits.detach(), rpn_deltas.detach(), (h, w))
        found, side = self.unlabelled_nuclei(feats, (h, w))
        if not torch.jit.is_scripting() and self.training and labels is not None:
            return self._training_outputs(feats, anchors, rpn_logits, rpn_deltas, proposals, found, labels, side)
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
        side: dict[str, torch.Tensor],
    ) -> dict:
        """The training dict (see :meth:`forward`); ``side`` is the second output of :meth:`unlabelled_nuclei`."""
        if labels.ndim != 4 or labels.shape[1] != 1 or labels.shape[0] != rpn_logits.shape[0]:
            raise ValueError(f"labels must be (B, 1, H, W) matching the images, got {tuple(labels.shape)}")
        gts = self.labelled_boxes(labels)
        out: dict = {}
        # ---- RPN: match anchors, ignore negatives on unlabelled nuclei found, sample
        rpn_sel, rpn_lab, rpn_pos_d, rpn_pos_t, n_ignored_rpn = [], [], [], [], 0
        for b, ((gt, _), pred) in enumerate(zip(gts, found, strict=True)):
            matches = match_on_device(self.rpn_matcher, gt.to(anchors), anchors, self.num_anchors)
            lab = torch.where(matches >= 0, 1, torch.where(matches == Matcher.BETWEEN_THRESHOLDS, -1, 0))
            ignored = self.negatives_to_ignore(lab, anchors, pred)
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
            matches = match_on_device(self.box_matcher, gt, cand, 1)
            lab = (matches >= 0).long()
            ignored = self.negatives_to_ignore(lab, cand, pred)
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
