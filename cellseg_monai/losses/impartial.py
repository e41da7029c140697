"""ImPartial losses: blind-spot mixture reconstruction (Eq. 1), class-balanced scribble CE (Eq. 2), joint (Eq. 3).

Martinez, Sapiro, Nadeem et al., "ImPartial: Partial Annotations for Cell Instance Segmentation",
bioRxiv 2021.01.20.427458; reference code github.com/nadeemlab/ImPartial (``general/losses.py``).

All losses take the raw output of :class:`cellseg_monai.networks.impartial_unet.ImPartialUNet`
``(B, M + M*C, H, W)`` and decode it with the functions of that module.

Differences from the reference code (deliberate, documented here once):

* Reconstruction: the reference averages each component's mean over the patch, mixes the averages with π into
  one value per pixel and scores it with a unit-variance Gaussian (i.e. ½ MSE + const). Here the likelihood is
  the per-pixel mixture Σ_j π_j N(x | μ_j, σ² I) (Eq. 1 as briefed), with σ = 0.1 of the [0, 1] image range:
  with the reference's σ = 1 every component explains every [0, 1] value almost equally well.
* Scribbles: the reference weights each foreground class by 1/#foreground classes even when it is absent from
  the batch; here the foreground term averages over the foreground classes present in the batch. Per class
  both average the per-image mean CE over the images that contain that class (as the reference does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.nn.modules.loss import _Loss

from cellseg_monai.networks.impartial_unet import check_classes, class_log_probabilities, split_output

__all__ = [
    "DEFAULT_WEIGHTS",
    "ImPartialLoss",
    "MixtureReconstructionLoss",
    "ScribbleLoss",
    "mixture_nll",
    "scribble_class_losses",
]

#: λ weights of Eq. 3, from the reference code's ``ImPartialConfig.weight_objectives`` (they sum to 1).
DEFAULT_WEIGHTS: dict[str, float] = {"seg_fore": 0.45, "seg_back": 0.45, "rec": 0.1}

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str, allowed: Sequence[str] = _REDUCTIONS) -> str:
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {tuple(allowed)}; got {reduction!r}.")
    return reduction


def mixture_nll(raw: Tensor, image: Tensor, classes: Sequence[int], in_channels: int, sigma: float) -> Tensor:
    """Per-pixel negative log-likelihood of ``image`` under the predicted mixture (Eq. 1).

    -log Σ_j π_j N(x | μ_j, σ² I), with N(x | μ, σ² I) = Π_c (2πσ²)^(-1/2) exp(-(x_c - μ_c)² / (2σ²)),
    computed as ``-logsumexp_j(log π_j + log N_j)``.

    Args:
        raw: ``(B, M + M*C, H, W)`` network output.
        image: ``(B, C, H, W)`` original (unmasked) image.
        classes: components per class, background first.
        in_channels: C.
        sigma: fixed component standard deviation (image units), > 0.

    Returns:
        ``(B, 1, H, W)`` NLL in nats (may be negative: it is a density).
    """
    logits, means = split_output(raw, classes, in_channels)  # (B, M, H, W), (B, M, C, H, W)
    if image.ndim != 4 or image.shape[1] != in_channels or image.shape[-2:] != raw.shape[-2:]:
        raise ValueError(
            f"image must be (B, {in_channels}, H, W) matching the network output {tuple(raw.shape)}; "
            f"got {tuple(image.shape)}."
        )
    log_pi = torch.log_softmax(logits, dim=1)
    sq = ((image.unsqueeze(1).to(means.dtype) - means) ** 2).sum(dim=2)  # (B, M, H, W)
    log_norm = -0.5 * sq / sigma**2 - in_channels * (math.log(sigma) + 0.5 * math.log(2.0 * math.pi))
    return -torch.logsumexp(log_pi + log_norm, dim=1, keepdim=True)


def scribble_class_losses(log_probs: Tensor, scribble: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class mean cross entropy on scribbled pixels (Eq. 2 before the class average).

    For class k (scribble value k + 1): in each image that has class-k scribbles, the mean of -log P(k | x)
    over them; then the mean over those images (reference code). Scribble 0 = unlabelled, ignored.

    Args:
        log_probs: ``(B, K, H, W)`` log class probabilities (:func:`class_log_probabilities`).
        scribble: ``(B, 1, H, W)`` or ``(B, H, W)`` integer, values in [0, K].

    Returns:
        ``losses`` ``(K,)`` (0 for absent classes, still attached to the graph) and ``present`` ``(K,)`` bool.
    """
    b, k = log_probs.shape[:2]
    if scribble.ndim == 4:
        if scribble.shape[1] != 1:
            raise ValueError(f"scribble must be (B, 1, H, W); got {tuple(scribble.shape)}.")
        scribble = scribble[:, 0]
    if scribble.ndim != 3 or scribble.shape[0] != b or scribble.shape[-2:] != log_probs.shape[-2:]:
        raise ValueError(
            f"scribble must be (B, 1, H, W) matching the output {tuple(log_probs.shape)}; got {tuple(scribble.shape)}."
        )
    if scribble.is_floating_point() and not torch.equal(scribble, scribble.round()):
        raise ValueError("scribble must hold integer values (0 unlabelled, 1 background, 2.. foreground).")
    scribble = scribble.long()
    if scribble.numel() and (scribble.min() < 0 or scribble.max() > k):
        raise ValueError(
            f"scribble values must be in [0, {k}] (0 unlabelled, k+1 = class k) for {k} classes; "
            f"got range [{int(scribble.min())}, {int(scribble.max())}]."
        )
    onehot = torch.stack([scribble == c + 1 for c in range(k)], dim=1).to(log_probs.dtype)  # (B, K, H, W)
    count = onehot.sum(dim=(2, 3))  # (B, K)
    ce_sum = -(log_probs * onehot).sum(dim=(2, 3))  # (B, K)
    per_image = ce_sum / count.clamp(min=1.0)
    has = (count > 0).to(log_probs.dtype)  # (B, K)
    n_img = has.sum(dim=0)  # (K,)
    losses = (per_image * has).sum(dim=0) / n_img.clamp(min=1.0)
    return losses, n_img > 0


class MixtureReconstructionLoss(_Loss):
    """Blind-spot mixture reconstruction loss (ImPartial Eq. 1).

    Negative log-likelihood of the ORIGINAL image values at the blind-spot pixels under the per-pixel mixture
    Σ_j π_j N(x | μ_j, σ² I) predicted from the masked image (isotropic Gaussian over the C channels, fixed σ).

    Args:
        classes: components per class, background first (M = sum).
        in_channels: C, image channels.
        sigma: component standard deviation in image units. Default 0.1 of the normalised [0, 1] range (our
            choice; the reference code uses σ = 1 on a single π-averaged mean, see the module docstring).
        reduction: ``"mean"`` over masked pixels (weighted by the mask value), ``"sum"`` over masked pixels, or
            ``"none"`` → ``(B, 1, H, W)`` NLL multiplied by the mask.

    forward(input, target, mask): ``input`` raw ``(B, M + M*C, H, W)``; ``target`` original image
    ``(B, C, H, W)``; ``mask`` ``(B, 1, H, W)`` bool/float, 1 at blind-spot pixels. A batch without masked
    pixels gives 0 (with gradient) for "mean".
    """

    def __init__(
        self, classes: Sequence[int] = (2, 2), in_channels: int = 1, sigma: float = 0.1, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=_check_reduction(reduction))
        self.classes = check_classes(classes)
        self.in_channels = int(in_channels)
        if not float(sigma) > 0:
            raise ValueError(f"sigma must be > 0; got {sigma}.")
        self.sigma = float(sigma)

    def forward(self, input: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        nll = mixture_nll(input, target, self.classes, self.in_channels, self.sigma)  # (B, 1, H, W)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
        if mask.shape != nll.shape:
            raise ValueError(f"mask must be (B, 1, H, W) = {tuple(nll.shape)}; got {tuple(mask.shape)}.")
        weight = mask.to(nll.dtype)
        weighted = nll * weight
        if self.reduction == "none":
            return weighted
        total = weighted.sum()
        if self.reduction == "sum":
            return total
        denom = weight.sum()
        return total / denom if denom > 0 else total * 0.0


class ScribbleLoss(_Loss):
    """Class-balanced cross entropy on scribbled pixels (ImPartial Eq. 2).

    For each class k: mean of -log P(k | x) over the pixels scribbled as k (scribble value k + 1; per image,
    then over the images containing k — reference code), then the average over the classes PRESENT in the
    batch, so a class with a long stroke does not dominate one with a short stroke. Scribble 0 is ignored;
    a batch without any scribble gives 0 with gradient (never NaN).

    Args:
        classes: components per class, background first (K = len(classes)).
        reduction: ``"mean"`` over present classes, ``"sum"`` over present classes, or ``"none"`` → per-class
            losses ``(K,)`` (0 for absent classes).

    forward(input, target): ``input`` raw ``(B, M + ..., H, W)``; ``target`` scribble ``(B, 1, H, W)`` int.
    """

    def __init__(self, classes: Sequence[int] = (2, 2), reduction: str = "mean") -> None:
        super().__init__(reduction=_check_reduction(reduction))
        self.classes = check_classes(classes)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        losses, present = scribble_class_losses(class_log_probabilities(input, self.classes), target)
        if self.reduction == "none":
            return losses
        total = (losses * present.to(losses.dtype)).sum()
        if self.reduction == "sum":
            return total
        return total / present.sum().clamp(min=1).to(losses.dtype)


class ImPartialLoss(_Loss):
    """Joint ImPartial objective (Eq. 3): λ_fore·L_fore + λ_back·L_back + λ_rec·L_rec.

    * ``seg_fore``: scribble CE of the foreground classes (1..K-1), averaged over those present in the batch;
    * ``seg_back``: scribble CE of the background class (0);
    * ``rec``: :class:`MixtureReconstructionLoss` on the blind-spot pixels.

    Each term is 0 (with gradient) when its scribbles / blind spots are absent from the batch.

    Args:
        classes: components per class, background first.
        in_channels: C, image channels.
        weights: λ per term, keys among ``seg_fore``, ``seg_back``, ``rec``; given keys replace the defaults
            :data:`DEFAULT_WEIGHTS` = {seg_fore: 0.45, seg_back: 0.45, rec: 0.1} (reference code
            ``ImPartialConfig.weight_objectives``; a budget summing to 1, which is kept as is, not renormalised).
        sigma: see :class:`MixtureReconstructionLoss`.
        reduction: only ``"mean"`` (per-pixel averages within each term, as in the reference code).

    forward(input, target): ``input`` raw ``(B, M + M*C, H, W)``; ``target`` dict with ``"image"``
    ``(B, C, H, W)`` original image, ``"blind_mask"`` ``(B, 1, H, W)`` and ``"scribble"`` ``(B, 1, H, W)``.
    Returns a scalar. ``self.last_terms`` holds the float value of every term and the total of the last call.
    """

    def __init__(
        self,
        classes: Sequence[int] = (2, 2),
        in_channels: int = 1,
        weights: Mapping[str, float] | None = None,
        sigma: float = 0.1,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=_check_reduction(reduction, ("mean",)))
        self.classes = check_classes(classes)
        self.in_channels = int(in_channels)
        w = dict(DEFAULT_WEIGHTS)
        if weights is not None:
            unknown = set(weights) - set(DEFAULT_WEIGHTS)
            if unknown:
                raise ValueError(f"unknown loss weight keys {sorted(unknown)}; allowed: {sorted(DEFAULT_WEIGHTS)}.")
            w.update({key: float(v) for key, v in weights.items()})
        if any(v < 0 for v in w.values()):
            raise ValueError(f"loss weights must be >= 0; got {w}.")
        self.weights = w
        self.reconstruction = MixtureReconstructionLoss(self.classes, self.in_channels, sigma, reduction=reduction)
        self.last_terms: dict[str, float] = {}

    def forward(self, input: Tensor, target: Mapping[str, Tensor]) -> Tensor:
        missing = {"image", "blind_mask", "scribble"} - set(target)
        if missing:
            raise ValueError(f"target dict lacks keys {sorted(missing)} (needs image, blind_mask, scribble).")
        losses, present = scribble_class_losses(class_log_probabilities(input, self.classes), target["scribble"])
        present_f = present.to(losses.dtype)
        seg_fore = (losses[1:] * present_f[1:]).sum() / present_f[1:].sum().clamp(min=1.0)
        seg_back = losses[0]
        rec = self.reconstruction(input, target["image"], target["blind_mask"])
        terms = {"seg_fore": seg_fore, "seg_back": seg_back, "rec": rec}
        total = sum(self.weights[key] * value for key, value in terms.items())
        self.last_terms = {key: float(value.detach()) for key, value in terms.items()}
        self.last_terms["total"] = float(total.detach())
        return total
