"""LACSS training losses: location proposals, weak (or full) per-cell segmentation, auxiliary boundary consistency.

Source: Shrestha, Kuang & Yu, "Efficient end-to-end learning for cell segmentation with machine generated weak
annotations", Communications Biology 6:232 (2023), Methods (and its preprint bioRxiv 2022.07.03.498609). Notation:
``p_i(x)`` in [0, 1] is the mask probability of cell i at pixel x (defined on its S×S window Ω_i), ``M(x)`` in {0, 1}
the image-level foreground mask (0 outside the image).

- LPN loss (:func:`lpn_loss`): sigmoid focal loss (Lin et al. 2017, γ = 2, α = 0.25) of the per-cell scores against
  the targets of :func:`~cellseg_monai.targets.locations.encode_lpn_targets` (nearest LOI), summed and
  divided by the number of positive cells, plus the Huber loss of the offsets on positive cells (mean).
- Weak segmentation loss (:func:`weak_segmentation_loss`): consistency of the cells with the image-level mask plus
  a penalty on overlaps between cells::

      L_mask    = mean_{x ∈ ∪Ω_i} BCE( max_i z_i(x), M(x) )                       (z_i = logit of p_i)
      L_overlap = 1/(K·S²) Σ_i Σ_{x∈Ω_i} p_i(x) · Σ_{j≠i} -log(1 - p_j(x))
      L_seg     = L_mask + λ · L_overlap

  ``L_mask`` compares the max-merged instance logits with the mask (the paper's reference implementation merges
  the cells' logits by a maximum before comparing them with an image-level segmentation); ``L_overlap`` is the
  paper's overlap penalty: a pixel claimed by cell j costs cell i ``-log(1 - p_j)``. λ = ``overlap_weight``
  (paper: 1). The paper's original form ``-p_i + λ p_i (Σ_{j≠i} -log(1-p_j) + β (1 - M))`` saturates (its gradient
  vanishes once every ``p_i`` is near 0, which a crowded crop reaches within a few dozen iterations); the
  cross-entropy of the merged logits does not.
- Fully supervised mode (:func:`supervised_segmentation_loss`): binary cross-entropy (2-class CE) of each window's
  logits against the true mask of the cell the window belongs to.
- Partial clicks (``LacssLoss(partial_points=True)``, our addition for annotating a fraction of the cells): the
  foreground mask covers every cell but only some have a point, so an unclicked cell would be taught to be background
  (LPN) and to belong to a clicked neighbour's mask (``L_mask`` inside that neighbour's window). The *unclicked
  foreground* (:func:`unclicked_foreground`: mask components, 8-connected, that hold no point) is left out of both:
  the LPN's focal loss skips grid cells over it and ``L_mask`` skips its pixels; background pixels and the
  components of the clicked cells are scored as before (a click on background vouches for the nearest component). A
  cell touching a clicked one shares its component and is still scored as that component's foreground (a stated
  limit: the mask does not say where one cell ends; the overlap penalty only sees clicked cells).
- Auxnet consistency (:func:`aux_boundary_loss`): the boundary map of the main network's cells,
  ``E(x) = tanh(Σ_i |∂_y p_i(x)| + |∂_x p_i(x)|)``, and the auxnet's ``e(x) = sigmoid(aux(x))`` are pulled together
  by ``mean_x (e(x) - E(x))²`` over pixels covered by some window; the gradient trains the auxnet on the main
  network's output and, through E, constrains the main network's masks back to the low field-of-view boundaries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from cellseg_monai.annotations.clicked_components import unclicked_components
from cellseg_monai.losses.focal import sigmoid_focal_loss
from cellseg_monai.targets.locations import crop_patches, encode_lpn_targets, window_coordinates

__all__ = [
    "LacssLoss",
    "aux_boundary_loss",
    "instance_edges",
    "lpn_loss",
    "supervised_segmentation_loss",
    "unclicked_foreground",
    "weak_segmentation_loss",
]

_EPS = 1e-6


def lpn_loss(
    logits: torch.Tensor,
    offsets: torch.Tensor,
    points: torch.Tensor,
    stride: int,
    radius: float | None = None,
    gamma: float = 2.0,
    alpha: float = 0.25,
    huber_delta: float = 1.0,
    offset_weight: float = 1.0,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """LPN loss of one image: focal(score) / max(1, #positives) + offset_weight · mean Huber(offsets on positives).

    Args:
        logits: (1, h, w) score logits; offsets: (2, h, w) offsets in units of ``stride``.
        points: (K, 2) (y, x) LOIs in pixels.
        stride, radius: see :func:`~cellseg_monai.targets.locations.encode_lpn_targets`.
        gamma, alpha: focal loss parameters (alpha weighs positives; < 0 disables the weighting).
        huber_delta: Huber transition point (offset units).
        ignore: optional (h, w) bool grid cells left out of the focal loss (positives are always scored).

    Returns:
        0-dim tensor.
    """
    target, offset_target = encode_lpn_targets(points, tuple(logits.shape[-2:]), stride, radius)
    target = target.to(logits.dtype)
    focal = sigmoid_focal_loss(logits, target, alpha, gamma)
    pos = target[0] > 0
    if ignore is not None:
        focal = focal * (pos | ~ignore.to(pos.device)).to(focal.dtype)
    n_pos = pos.sum()
    loss = focal.sum() / n_pos.clamp(min=1)
    if n_pos > 0:
        huber = F.huber_loss(
            offsets[:, pos], offset_target.to(offsets.dtype)[:, pos], delta=huber_delta, reduction="none"
        )
        loss = loss + offset_weight * huber.sum(0).mean()
    return loss


def _canvas_index(centers: torch.Tensor, size: int, pad: int, width: int) -> torch.Tensor:
    """(K, S, S) flat indices of the windows into one (H + 2·pad) × (W + 2·pad) canvas."""
    rows, cols = window_coordinates(centers, size)
    return (rows[:, :, None] + pad) * (width + 2 * pad) + (cols[:, None, :] + pad)


def unclicked_foreground(fg_mask: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Foreground pixels no point vouches for: the 8-connected components of ``fg_mask`` that hold none of
    ``points`` (partial clicks, module docstring). A point on a background pixel (a jittered click, the centroid of
    a non-convex cell) vouches for the component of the nearest foreground pixel.

    Args:
        fg_mask: (H, W) foreground mask, > 0 = foreground.
        points: (K, 2) (y, x) pixel coordinates (rounded; points outside the image are ignored).

    Returns:
        (H, W) bool on ``fg_mask``'s device.
    """
    fg = fg_mask.detach().cpu().numpy() > 0
    comp, ids = unclicked_components(fg, points.detach().float().cpu().numpy())
    out = np.isin(comp, ids) & fg
    return torch.from_numpy(out).to(fg_mask.device)


def weak_segmentation_loss(
    logits: torch.Tensor,
    centers: torch.Tensor,
    fg_mask: torch.Tensor,
    overlap_weight: float = 1.0,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """The weakly supervised segmentation loss ``L_seg = L_mask + λ · L_overlap`` (module docstring) of one image.

    Args:
        logits: (K, S, S) mask logits of the windows centred at ``centers``.
        centers: (K, 2) (y, x) window centres.
        fg_mask: (H, W) image-level foreground mask in {0, 1} (pixels outside the image count as background).
        overlap_weight: λ.
        ignore: optional (H, W) bool pixels left out of ``L_mask`` (the unclicked foreground of partial clicks).

    Returns:
        0-dim tensor >= 0, 0 when K = 0.
    """
    k, s, _ = logits.shape
    if k == 0:
        return logits.sum() * 0.0
    h, w = fg_mask.shape
    pad = s // 2 + 1
    idx = _canvas_index(centers, s, pad, w).reshape(-1)
    n = (h + 2 * pad) * (w + 2 * pad)
    merged = torch.full((n,), -1e4, dtype=logits.dtype, device=logits.device)
    merged = merged.scatter_reduce(0, idx, logits.reshape(-1), reduce="amax", include_self=True)
    covered = torch.zeros(n, dtype=torch.bool, device=logits.device)
    covered[idx] = True
    mask = F.pad(fg_mask.to(logits.dtype), (pad, pad, pad, pad)).reshape(-1)
    if ignore is not None:
        covered &= ~F.pad(ignore.to(torch.bool), (pad, pad, pad, pad)).reshape(-1).to(covered.device)
    l_mask = F.binary_cross_entropy_with_logits(merged[covered], mask[covered]) if covered.any() else logits.sum() * 0.0
    probs = torch.sigmoid(logits)
    log1m = F.logsigmoid(-logits).clamp(min=-1e4)  # log(1 - p), stable
    log1m_sum = torch.zeros(n, dtype=logits.dtype, device=logits.device).index_add(0, idx, log1m.reshape(-1))
    others = -(log1m_sum[idx].reshape(k, s, s) - log1m)
    l_overlap = (probs * others).mean()
    return l_mask + overlap_weight * l_overlap


def supervised_segmentation_loss(logits: torch.Tensor, target_masks: torch.Tensor) -> torch.Tensor:
    """Fully supervised mode: mean binary cross-entropy of (K, S, S) logits against (K, S, S) true masks in {0, 1}."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits, target_masks.to(logits.dtype))


def instance_edges(
    probs: torch.Tensor, centers: torch.Tensor, shape: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary map of the cells of one image and the pixels their windows cover.

    Args:
        probs: (K, S, S) mask probabilities; centers: (K, 2) window centres; shape: (H, W).

    Returns:
        ``(edges, covered)``: (H, W) ``tanh(Σ_i |∂_y p_i| + |∂_x p_i|)`` (forward differences, 0 past the window
        end) in [0, 1), and (H, W) bool.
    """
    k, s, _ = probs.shape
    h, w = shape
    pad = s // 2 + 1
    n = (h + 2 * pad) * (w + 2 * pad)
    dy = F.pad((probs[:, 1:, :] - probs[:, :-1, :]).abs(), (0, 0, 0, 1))
    dx = F.pad((probs[:, :, 1:] - probs[:, :, :-1]).abs(), (0, 1, 0, 0))
    idx = _canvas_index(centers, s, pad, w).reshape(-1)
    edge = torch.zeros(n, dtype=probs.dtype, device=probs.device).index_add(0, idx, (dy + dx).reshape(-1))
    cover = torch.zeros(n, dtype=probs.dtype, device=probs.device).index_add(
        0, idx, torch.ones_like(idx, dtype=probs.dtype)
    )
    edge = edge.reshape(h + 2 * pad, w + 2 * pad)[pad : pad + h, pad : pad + w]
    cover = cover.reshape(h + 2 * pad, w + 2 * pad)[pad : pad + h, pad : pad + w]
    return torch.tanh(edge), cover > 0


def aux_boundary_loss(aux_logits: torch.Tensor, probs: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Auxnet consistency of one image: mean over covered pixels of ``(sigmoid(aux) - E)²`` (module docstring).

    Args:
        aux_logits: (1, H, W) auxnet boundary logits; probs: (K, S, S); centers: (K, 2).

    Returns:
        0-dim tensor in [0, 1]; 0 when no pixel is covered.
    """
    edges, covered = instance_edges(probs, centers, tuple(aux_logits.shape[-2:]))
    if not covered.any():
        return aux_logits.sum() * 0.0
    return ((torch.sigmoid(aux_logits[0]) - edges) ** 2)[covered].mean()


class LacssLoss(_Loss):
    """LACSS training loss on :class:`cellseg_monai.networks.lacss.Lacss`'s training dict.

    ``forward(output, target)``: ``output`` is the network's training dict; ``target`` is (B, 2, H, W) (weak:
    channel 0 the point map, channel 1 the foreground mask) or (B, 3, H, W) (channel 2 the instance labels, needed
    when ``supervised``). Returns the total, reduced over images by ``reduction`` ("mean", "sum" or "none" → (B,)).

    Per image: ``lpn_weight · L_lpn + seg_weight · L_seg + aux_weight · L_aux``, with ``L_seg`` the weak loss
    (default) or the supervised BCE (``supervised=True``; the cell of a window is the label under its GT point,
    else the label whose id is the point id, as simulated points carry). The auxnet term is skipped when the
    network has no auxnet or ``aux_weight`` is 0.

    Args:
        supervised: fully supervised mode (cross-entropy on the true masks).
        partial_points: only some cells are clicked: the unclicked foreground is left out of the LPN and mask losses
            (module docstring). A bundle sets it when its ``annotation_budget`` is below every cell.
        lpn_weight, offset_weight, seg_weight, aux_weight: term weights.
        overlap_weight: λ of the weak loss.
        focal_gamma, focal_alpha, huber_delta, positive_radius: LPN loss parameters (:func:`lpn_loss`).
        reduction: "mean" | "sum" | "none".
    """

    def __init__(
        self,
        supervised: bool = False,
        lpn_weight: float = 1.0,
        offset_weight: float = 1.0,
        seg_weight: float = 1.0,
        aux_weight: float = 0.5,
        overlap_weight: float = 1.0,
        focal_gamma: float = 2.0,
        focal_alpha: float = 0.25,
        huber_delta: float = 1.0,
        positive_radius: float | None = None,
        reduction: str = "mean",
        partial_points: bool = False,
    ) -> None:
        super().__init__(reduction=reduction)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.supervised = supervised
        self.lpn_weight, self.offset_weight = lpn_weight, offset_weight
        self.seg_weight, self.aux_weight = seg_weight, aux_weight
        self.overlap_weight = overlap_weight
        self.focal_gamma, self.focal_alpha, self.huber_delta = focal_gamma, focal_alpha, huber_delta
        self.positive_radius = positive_radius
        self.partial_points = bool(partial_points)

    def forward(self, output: dict[str, Any], target: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not isinstance(output, dict) or "seg_logits" not in output:
            raise TypeError(
                "LacssLoss needs the training dict of Lacss (call the network in train mode with points=...; in a "
                "bundle use PrepareBatchExtraInput(extra_keys={'points': 'points'}))"
            )
        if target.ndim != 4 or target.shape[1] not in (2, 3):
            raise ValueError(f"target must be (B, 2|3, H, W) [points, mask(, labels)], got {tuple(target.shape)}")
        if self.supervised and target.shape[1] != 3:
            raise ValueError("supervised LacssLoss needs the instance labels as target channel 2 (B, 3, H, W)")
        hp, wp = output["padded_shape"]
        h, w = target.shape[-2:]
        target = F.pad(target.float(), (0, wp - w, 0, hp - h))
        bidx, centers = output["batch_index"], output["centers"]
        gt, ids = output["gt_points"], output["point_ids"]
        seg_logits = output["seg_logits"][:, 0]
        probs = torch.sigmoid(seg_logits)
        if self.supervised:
            lab = target[:, 2:3]
            under = lab[bidx, 0, gt[:, 0].long(), gt[:, 1].long()].long()
            cell = torch.where(under > 0, under, ids)
            crops = crop_patches(lab, bidx, centers, seg_logits.shape[-1])[:, 0]
            true_masks = (crops.long() == cell[:, None, None]).float()
        per_image = []
        stride = output["lpn_stride"]
        for b in range(target.shape[0]):
            sel = bidx == b
            ignore = lpn_ignore = None
            if self.partial_points:
                ignore = unclicked_foreground(target[b, 1], gt[sel])
                grid = output["lpn_logits"][b].shape[-2:]
                lpn_ignore = F.max_pool2d(ignore[None, None].float(), stride, stride, ceil_mode=True)[0, 0] > 0
                lpn_ignore = lpn_ignore[: grid[0], : grid[1]]
            total = self.lpn_weight * lpn_loss(
                output["lpn_logits"][b],
                output["lpn_offsets"][b],
                gt[sel],
                stride,
                self.positive_radius,
                self.focal_gamma,
                self.focal_alpha,
                self.huber_delta,
                self.offset_weight,
                lpn_ignore,
            )
            if self.supervised:
                seg = supervised_segmentation_loss(seg_logits[sel], true_masks[sel])
            else:
                seg = weak_segmentation_loss(seg_logits[sel], centers[sel], target[b, 1], self.overlap_weight, ignore)
            total = total + self.seg_weight * seg
            aux = output.get("aux_logits")
            if aux is not None and self.aux_weight > 0:
                total = total + self.aux_weight * aux_boundary_loss(aux[b], probs[sel], centers[sel])
            per_image.append(total)
        losses = torch.stack(per_image)
        if self.reduction == "mean":
            return losses.mean()
        if self.reduction == "sum":
            return losses.sum()
        return losses
