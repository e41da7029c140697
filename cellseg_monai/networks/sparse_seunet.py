"""SparseSEU-Net: an SE-U-Net whose decoder also feeds a sparse instance branch (instance activation maps).

Prytula, "Accurate Whole Cell Instance Segmentation from Brightfield Images" (bachelor thesis, 2023), Sec. 4.3,
after SparseInst (Cheng et al., "Sparse Instance Activation for Real-Time Instance Segmentation", CVPR 2022):

- the **instance branch** turns decoder features F (B, C, h, w) (+ 2 coordinate channels) into N instance
  activation maps A = sigmoid(conv(F)) (B, N, h, w) (default N = 100);
- instance features are aggregated from the normalised maps (thesis Eq. 4.9):
  ``z_i = Σ_x A_i(x) F(x) / Σ_x A_i(x)`` (B, N, C);
- from z_i, linear layers give the class logit, the objectness logit and a mask kernel k_i (D values);
- the **mask branch** turns F into mask features M (B, D, h, w); the mask logits are ``m_i = k_i · M(x)``;
- the single branch reads the decoder level at half resolution by default (``instance_level=1``); masks are
  upsampled (bilinear) to full resolution;
- **multi-level** option (``multi_level=True``): one instance + mask branch at every decoder level, each with N
  instances; their masks are upsampled (bilinear) to full resolution and the sets are concatenated (L · N).

The semantic heads of the SE-U-Net (:class:`cellseg_monai.networks.seunet.SEUNet`) are trained jointly, so ONE
trained model gives both SparseSEU-Net instances and SEU-Net + watershed instances.

Outputs of :class:`SparseSEUNet`:

- training mode: a dict ``{"semantic": (B, K, H, W) logits, "logits": (B, M, 1) class logits,
  "objectness": (B, M, 1) logits, "masks": (B, M, H, W) mask logits}`` (M = N, or L · N multi-level), the input
  of :class:`cellseg_monai.losses.sparse_instance.SparseSEUNetLoss`;
- eval mode: ONE tensor (B, 2 + K, H, W): channel 0 the instance labels of the sparse branch (float holding
  integers 0..K_b, :func:`cellseg_monai.postprocessing.sparse_instances.sparse_instances_to_labels`: ranked by
  class score × maskness, the class score being ``sigmoid(class)``, or ``sqrt(sigmoid(class) · sigmoid(objectness))``
  as in SparseInst with ``objectness_score=True``), channel 1 each pixel's instance score
  (0 on background), channels 2.. the sigmoid probabilities of the K semantic heads.
  :class:`cellseg_monai.transforms.semantic_targets.SEUNetOutputsToInstancesd` decodes it either way.

Inputs of any size are zero-padded to a multiple of the network stride and the outputs cropped back.

**Predict at the training patch size.** The instance branch reads coordinate channels in [-1, 1] over its input
(CoordConv, as SparseInst), so what a mask kernel learns in pixels depends on the input size: a model trained on
128 × 128 crops and run on a whole 512 × 512 image predicts masks about 4× too wide (on BBBC038 val after 25 CPU
minutes: F1@0.5 0.03 whole-image vs 0.26 tiled, same checkpoint and score threshold 0.3). With the sparse decoder
the bundle therefore predicts tile by tile at the training patch size with
:class:`cellseg_monai.inferers.TiledInstanceInferer` (instances stitched by tile cores, the semantic probabilities
taken per pixel from the same cores), which also lifts the cap of N instances per image to N per tile. Built with
``decoder="watershed"``, eval mode skips the instance branch (channels 0 and 1 are zeros) and the semantic heads,
which have no coordinate channels, run over large blended tiles instead (:class:`cellseg_monai.inferers.SEUNetInferer`
picks the tiling for either decoder).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cellseg_monai.networks.seunet import SEUNet, pad_to_multiple
from cellseg_monai.postprocessing.sparse_instances import scored_masks_to_labels
from cellseg_monai.torchscript import shape_repr

__all__ = ["InstanceActivationBranch", "SparseSEUNet", "aggregate_instance_features", "coordinate_channels"]


def coordinate_channels(x: Tensor) -> Tensor:
    """(B, C, h, w) → (B, C + 2, h, w): appends y and x coordinates in [-1, 1] (CoordConv)."""
    b, _, h, w = x.shape
    yy = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
    xx = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(yy, xx, indexing="ij")).expand(b, 2, h, w)
    return torch.cat([x, grid], dim=1)


def aggregate_instance_features(iam: Tensor, features: Tensor, eps: float = 1e-6) -> Tensor:
    """Instance features from instance activation maps (thesis Eq. 4.9).

    Args:
        iam: (B, N, h, w) non-negative activation maps (sigmoid outputs).
        features: (B, C, h, w) features.
        eps: lower bound of each map's sum.

    Returns:
        (B, N, C): ``z_i = Σ_x A_i(x) F(x) / Σ_x A_i(x)``.
    """
    a = iam.flatten(2)
    a = a / a.sum(-1, keepdim=True).clamp(min=eps)
    return torch.bmm(a, features.flatten(2).transpose(1, 2))


def _convs(in_channels: int, channels: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class InstanceActivationBranch(nn.Module):
    """Instance branch + mask branch on one feature level (SparseInst decoder, thesis Sec. 4.3).

    Args:
        in_channels: channels of the decoder features it reads.
        num_instances: N, the number of instance activation maps (predictions).
        channels: hidden channels of both branches.
        kernel_dim: D, length of the mask kernels and channels of the mask features.
        num_classes: class logits per instance (1: cell).
        num_convs: 3×3 convolutions before the IAM layer and in the mask branch.
        prior_prob: initial activation of the IAMs and class scores (focal-loss initialisation).

    ``forward(features (B, C, h, w))`` → dict ``logits`` (B, N, num_classes), ``objectness`` (B, N, 1),
    ``masks`` (B, N, h, w) mask logits, ``iam`` (B, N, h, w) activation maps in [0, 1].
    """

    def __init__(
        self,
        in_channels: int,
        num_instances: int = 100,
        channels: int = 64,
        kernel_dim: int = 32,
        num_classes: int = 1,
        num_convs: int = 2,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if num_instances < 1 or kernel_dim < 1 or num_classes < 1:
            raise ValueError("num_instances, kernel_dim and num_classes must be >= 1.")
        self.inst_convs = _convs(in_channels + 2, channels, num_convs)
        self.iam = nn.Conv2d(channels, num_instances, 3, padding=1)
        self.cls = nn.Linear(channels, num_classes)
        self.objectness = nn.Linear(channels, 1)
        self.kernel = nn.Linear(channels, kernel_dim)
        self.mask_convs = nn.Sequential(
            _convs(in_channels + 2, channels, num_convs), nn.Conv2d(channels, kernel_dim, 1)
        )
        bias = -math.log((1 - prior_prob) / prior_prob)
        # std 0.1 (SparseInst: 0.01): more diverse initial maps break the symmetry between the N predictions sooner;
        # on a one-image overfit (5 discs, 200 Adam steps) the matched mask Dice reached 0.97 / 0.82 instead of
        # 0.74 / 0.57 (two seeds)
        nn.init.normal_(self.iam.weight, std=0.1)
        nn.init.constant_(self.iam.bias, bias)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.constant_(self.cls.bias, bias)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        features = coordinate_channels(features)
        inst = self.inst_convs(features)
        iam = torch.sigmoid(self.iam(inst))
        z = aggregate_instance_features(iam, inst)  # Eq. 4.9
        kernels = self.kernel(z)
        mask_features = self.mask_convs(features)
        masks = torch.einsum("bnd,bdhw->bnhw", kernels, mask_features)
        return {"logits": self.cls(z), "objectness": self.objectness(z), "masks": masks, "iam": iam}


class SparseSEUNet(nn.Module):
    """SE-U-Net semantic heads + sparse instance branch, trained jointly (see the module docstring).

    Args:
        in_channels, heads, features, se_reduction, head_channels: see :class:`~cellseg_monai.networks.seunet.SEUNet`.
        num_instances: N instance activation maps per branch.
        inst_channels: hidden channels of the instance and mask branches.
        kernel_dim: D, mask kernel length.
        multi_level: a branch at every decoder level (True) or only at one level (False, ``instance_level``).
        instance_level: the single branch's level, counted in 2× downsamplings from full resolution (0 = the
            finest decoder level; 1 = half resolution, the default: 4× cheaper, masks upsampled bilinearly).
        score_threshold, mask_threshold, nms_threshold, min_size: eval-mode post-processing, see
            :func:`cellseg_monai.postprocessing.sparse_instances.sparse_instances_to_labels`.
        objectness_score: class score ``sqrt(sigmoid(class) · sigmoid(objectness))`` (SparseInst) instead of
            ``sigmoid(class)``; the final score is always class score × maskness.
        decoder: which instances eval mode computes: ``"sparse"`` runs the instance branch; ``"watershed"`` (the
            instances come from the semantic heads, see
            :class:`~cellseg_monai.transforms.semantic_targets.SEUNetOutputsToInstancesd`) skips it and returns
            zeros in channels 0 and 1, so the semantic heads alone cost time. Training mode always runs both.
    """

    def __init__(
        self,
        in_channels: int = 3,
        heads: Sequence[str] = ("foreground", "border", "background", "overlap"),
        features: Sequence[int] = (16, 32, 64, 128),
        se_reduction: int = 8,
        head_channels: int = 16,
        num_instances: int = 100,
        inst_channels: int = 32,
        kernel_dim: int = 32,
        multi_level: bool = False,
        instance_level: int = 1,
        score_threshold: float = 0.1,
        mask_threshold: float = 0.5,
        nms_threshold: float = 0.5,
        min_size: int = 16,
        objectness_score: bool = False,
        decoder: str = "sparse",
    ) -> None:
        super().__init__()
        if decoder not in ("sparse", "watershed"):
            raise ValueError(f"decoder must be 'sparse' or 'watershed', got {decoder!r}.")
        self.sparse_eval = decoder == "sparse"
        self.objectness_score = bool(objectness_score)
        self.seunet = SEUNet(in_channels, heads, features, se_reduction, head_channels)
        channels = self.seunet.decoder_channels
        if not 0 <= instance_level < len(channels):
            raise ValueError(f"instance_level must be in [0, {len(channels) - 1}] for features {tuple(features)}.")
        self.levels = list(range(len(channels))) if multi_level else [len(channels) - 1 - instance_level]
        self.branches = nn.ModuleList(
            InstanceActivationBranch(channels[lvl], num_instances, inst_channels, kernel_dim) for lvl in self.levels
        )
        self.heads = self.seunet.heads
        self.score_threshold, self.mask_threshold = float(score_threshold), float(mask_threshold)
        self.nms_threshold, self.min_size = float(nms_threshold), int(min_size)

    def forward_train(self, x: Tensor) -> dict[str, Tensor]:
        """(B, C, H, W) → dict of semantic logits and the predicted set (see the module docstring)."""
        if x.ndim != 4:
            raise ValueError(f"SparseSEUNet expects (B, C, H, W) input, got shape {shape_repr(x)}.")
        padded, (h, w) = pad_to_multiple(x, self.seunet.stride)
        semantic, levels = self.seunet.decode(padded)
        out: dict[str, list[Tensor]] = {"logits": [], "objectness": [], "masks": []}
        for i, branch in enumerate(self.branches):
            pred = branch(levels[self.levels[i]])
            masks = pred["masks"]
            if masks.shape[-2:] != padded.shape[-2:]:
                masks = F.interpolate(masks, size=padded.shape[-2:], mode="bilinear", align_corners=False)
            out["masks"].append(masks[..., :h, :w])
            out["logits"].append(pred["logits"])
            out["objectness"].append(pred["objectness"])
        result = {k: torch.cat(v, dim=1) for k, v in out.items()}
        result["semantic"] = semantic[..., :h, :w]
        return result

    def predict(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, 2 + K, H, W): sparse labels, instance score map, semantic probabilities.

        The same labels as thresholding :meth:`forward_train`'s full-resolution masks, but only the predictions
        that can pass ``score_threshold`` are upsampled (:meth:`_may_score`): the rest never reach the labels.
        """
        with torch.no_grad():  # a context, not the decorator: TorchScript compiles it
            if x.ndim != 4:
                raise ValueError(f"SparseSEUNet expects (B, C, H, W) input, got shape {shape_repr(x)}.")
            padded, (h, w) = pad_to_multiple(x, self.seunet.stride)
            semantic, levels = self.seunet.decode(padded)
            probabilities = torch.sigmoid(semantic[..., :h, :w])
            if not self.sparse_eval:
                return torch.cat([probabilities.new_zeros((x.shape[0], 2, h, w)), probabilities], dim=1)
            class_probs: list[Tensor] = []
            low_masks: list[Tensor] = []  # mask logits at each branch's resolution
            for i, branch in enumerate(self.branches):
                pred = branch(levels[self.levels[i]])
                class_prob = torch.sigmoid(pred["logits"][..., 0])
                if self.objectness_score:
                    class_prob = torch.sqrt(class_prob * torch.sigmoid(pred["objectness"][..., 0]))
                class_probs.append(class_prob)
                low_masks.append(pred["masks"])
            channels: list[Tensor] = []
            for b in range(x.shape[0]):
                probs: list[Tensor] = []
                masks: list[Tensor] = []
                for i in range(len(low_masks)):
                    cp, low = class_probs[i], low_masks[i]
                    keep = torch.nonzero(self._may_score(cp[b], low[b]))[:, 0]
                    if keep.numel() == 0:
                        continue
                    m = low[b][keep]
                    if m.shape[-2:] != padded.shape[-2:]:
                        m = F.interpolate(m[None], size=padded.shape[-2:], mode="bilinear", align_corners=False)[0]
                    masks.append(torch.sigmoid(m[..., :h, :w]))
                    probs.append(cp[b][keep])
                if len(masks) == 0:
                    labels = torch.zeros((h, w), dtype=torch.long, device=x.device)
                    scores = torch.zeros(0, device=x.device)
                else:
                    labels, scores = scored_masks_to_labels(
                        torch.cat(probs),
                        torch.cat(masks),
                        self.score_threshold,
                        self.mask_threshold,
                        self.nms_threshold,
                        self.min_size,
                    )
                score_map = torch.cat([scores.new_zeros(1), scores])[labels]
                channels.append(torch.stack([labels.to(x.dtype), score_map.to(x.dtype)]))
            return torch.cat([torch.stack(channels), probabilities], dim=1)

    def _may_score(self, class_prob: Tensor, low_masks: Tensor) -> Tensor:
        """(N,) class scores, (N, h, w) low-resolution mask logits → (N,) bool: the prediction may claim a pixel and
        reach ``score_threshold`` once its mask is upsampled.

        Bilinear upsampling takes convex combinations, so no full-resolution logit exceeds the low-resolution
        maximum (a margin covers rounding); the maskness is a mean of claimed probabilities, at most the sigmoid
        of that maximum. So a prediction failing either test scores below the threshold or claims nothing.
        """
        top = low_masks.flatten(1).amax(1).float()
        bound = torch.sigmoid(top + 0.01 * top.abs() + 1e-3)
        return (bound > self.mask_threshold) & (class_prob.float() * bound >= self.score_threshold)

    def forward(self, x: Tensor) -> dict[str, Tensor] | Tensor:
        if self.training:
            return self.forward_train(x)
        return self.predict(x)
