"""Canonical-shape network: an encoder places N affine copies of one learned canonical shape on the image.

Costa, Gaudio, Campilho & Cardoso, "Explainable Weakly-Supervised Cell Nuclei Segmentation by Canonical Shape
Learning and Transformation", MIDL 2022 (Sec. 2.1 implicit shape, Eq. 1-2 rendering, Sec. 2.4 encoder).

Pipeline:

1. Encoder (Sec. 2.4): a ResNet-style backbone without pooling/FC whose last stride is replaced by dilation, so the
   output stride is 16 (a 128 px patch gives 8×8 features). Two 1×1 conv heads predict, for A =
   ``instances_per_cell`` instances per feature cell (N = A·h·w instances; 128 for a 128 px patch and A = 2), an
   affine transformation T = [L | t] and a presence probability p(z) = sigmoid(·).
2. Rendering (Eq. 1-2): every instance n maps canonical coordinates X_c to image coordinates
   X = L_n X_c + c_n + t_n (c_n: centre of its feature cell); a pixel X is drawn from the canonical shape at
   X_c = L_n⁻¹ (X - c_n - t_n): p_n(X) = p(s | X_c) · p(z_n). The instances are combined by the maximum,
   p(X) = max_n p_n(X).

Coordinate system (a choice; the paper's could not be checked): **input-image pixels**, x = column, y = row, origin
at the image's top-left corner, pixel (i, j) centred at (x, y) = (j + 0.5, i + 0.5). The same (L, t) therefore mean
the same nucleus at every rendering resolution and for every image size (tiling), and the explainability CSV reads in
pixels. Rendering at (H', W') samples the input-pixel positions ((j + 0.5) W / W', (i + 0.5) H / H').

Direction of T (a choice): T maps canonical → image ("deform the canonical shape into the correct location, scale
and orientation", abstract), so t + c is the instance's centre and L's columns are its axes in pixels. The grid
form X' = L X + t of Eq. 1 (image → canonical) is the same family of maps (the inverse of a lower-triangular matrix
with positive diagonal is one too); only the parametrisation differs.

Parametrisation of the heads' raw outputs (choices where the paper is silent, with s = ``base_scale``, default
stride / 2 = 8 px, ε = 0.01 and a0 chosen so that softplus(a0) + ε = 1)::

    L = [[s·(softplus(a + a0) + ε), 0], [s·b, s·(softplus(d + a0) + ε)]]   lower-triangular, diagonal ≥ ε·s > 0
    t = max_offset · stride · tanh(raw_t)                         (|t| ≤ max_offset cells; linear if None)
    p(z) = sigmoid(raw_z), bias initialised at logit(presence_prior)

At initialisation L = diag(s, s), t = 0: with the MLP's initial disc of radius 1 every instance is a disc of radius
8 px at its cell centre. A lower-triangular L loses nothing for a rotation-symmetric canonical shape: L Lᵀ is the
Cholesky factorisation of any ellipse's shape matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import Tensor, nn

from cellseg_monai.networks.canonical_shape.implicit_shape import ImplicitShapeMLP
from cellseg_monai.torchscript import shape_repr

__all__ = [
    "BACKBONES",
    "CanonicalShapeNet",
    "DilatedResNet",
    "box_pixels",
    "canonical_coordinates",
    "instance_boxes",
    "render_instances",
    "render_points",
    "shape_support_radius",
]

#: name -> (block type, blocks per stage). "resnet50" is the paper's encoder (Sec. 2.4); "resnet10" the CPU default.
BACKBONES: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet10": ("basic", (1, 1, 1, 1)),
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}

_MIN_DIAG = 1e-2  # floor of L's diagonal (units of base_scale): L stays invertible when softplus underflows
_SOFTPLUS_ONE = math.log(math.exp(1.0 - _MIN_DIAG) - 1.0)  # softplus(_SOFTPLUS_ONE) + _MIN_DIAG == 1


def _conv(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=dilation * (k // 2), dilation=dilation, bias=False)


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, norm: str | tuple, act: str | tuple):
        super().__init__()
        self.body = nn.Sequential(
            _conv(cin, planes, 3, stride, dilation),
            get_norm_layer(norm, 2, planes),
            get_act_layer(act),
            _conv(planes, planes, 3, 1, dilation),
            get_norm_layer(norm, 2, planes),
        )
        self.skip = _skip(cin, planes, stride, norm)
        self.act = get_act_layer(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, norm: str | tuple, act: str | tuple):
        super().__init__()
        out = planes * self.expansion
        self.body = nn.Sequential(
            _conv(cin, planes, 1),
            get_norm_layer(norm, 2, planes),
            get_act_layer(act),
            _conv(planes, planes, 3, stride, dilation),
            get_norm_layer(norm, 2, planes),
            get_act_layer(act),
            _conv(planes, out, 1),
            get_norm_layer(norm, 2, out),
        )
        self.skip = _skip(cin, out, stride, norm)
        self.act = get_act_layer(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))


def _skip(cin: int, cout: int, stride: int, norm: str | tuple) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(_conv(cin, cout, 1, stride), get_norm_layer(norm, 2, cout))


class DilatedResNet(nn.Module):
    """ResNet feature extractor (no pooling/FC) with the last stage's stride replaced by dilation 2 (output stride 16).

    Stem: 7×7 conv stride 2 + norm + act + 3×3 max-pool stride 2; stages 1-4 with strides 1, 2, 2, 1 and dilation
    1, 1, 1, 2 (the first block of stage 4 keeps dilation 1, as torchvision's ``replace_stride_with_dilation``).
    Randomly initialised (no ImageNet weights: nothing is downloaded).

    Args:
        in_channels: image channels C.
        depth: a key of :data:`BACKBONES` ("resnet50" = the paper's encoder; "resnet10" = light CPU default).
        features: width of the stem and of stage 1 (64 in the standard ResNets); stages double it.
        norm: MONAI norm spec, e.g. "batch" or ("group", {"num_groups": 8}).
        act: MONAI activation spec.

    Input (B, C, H, W) → output (B, ``out_channels``, ceil(H/16), ceil(W/16)) (8×8 for 128×128).
    """

    stride: int = 16

    def __init__(
        self,
        in_channels: int = 1,
        depth: str = "resnet10",
        features: int = 32,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if depth not in BACKBONES:
            raise ValueError(f"depth must be one of {sorted(BACKBONES)}; got {depth!r}.")
        if in_channels < 1 or features < 1:
            raise ValueError(f"in_channels and features must be >= 1; got {in_channels!r}, {features!r}.")
        kind, blocks = BACKBONES[depth]
        block = _BasicBlock if kind == "basic" else _Bottleneck
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, features, 7, stride=2, padding=3, bias=False),
            get_norm_layer(norm, 2, features),
            get_act_layer(act),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        cin = features
        for i, (n, stride, dilation) in enumerate(zip(blocks, (1, 2, 2, 1), (1, 1, 1, 2), strict=True)):
            planes = features * 2**i
            layers = []
            for j in range(n):
                layers.append(
                    block(cin, planes, stride if j == 0 else 1, 1 if (j == 0 and i == 3) else dilation, norm, act)
                )
                cin = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, out_channels, ceil(H/16), ceil(W/16))."""
        return self.stages(self.stem(x))


def canonical_coordinates(params: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
    """Canonical coordinates X_c = L⁻¹ (X - c - t) of every instance at every pixel of a (H', W') grid (Eq. 1).

    Args:
        params: :meth:`CanonicalShapeNet.predict_parameters`'s dict; reads "L" (B, N, 2, 2) lower-triangular
            (acts on (x, y)), "t" (B, N, 2) and "centre" (B, N, 2) in input pixels (x, y) and "image_size" (B, 2) =
            (H, W) of the input in pixels (see the module docstring for the coordinate system).
        size: output (H', W'); any resolution (the paper: 1/4 in training, full at inference).

    Returns:
        (B, N, H', W', 2) canonical (x, y), the input of the canonical shape (TorchScript-compatible).
    """
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"size must be (H', W') with positive sides; got {size}.")
    missing: list[str] = []
    for k in ["L", "t", "centre", "presence", "image_size"]:
        if k not in params:
            missing.append(k)
    if len(missing) > 0:
        raise ValueError(f"params lack {missing}; expected the dict of CanonicalShapeNet.predict_parameters.")
    L, pos, image_size = params["L"], params["centre"] + params["t"], params["image_size"]
    if L.ndim != 4 or L.shape[-2] != 2 or L.shape[-1] != 2 or list(pos.shape) != [L.shape[0], L.shape[1], 2]:
        raise ValueError(f"params need L (B, N, 2, 2) and t, centre (B, N, 2); got {shape_repr(L)}, {shape_repr(pos)}.")
    h_out, w_out = int(size[0]), int(size[1])
    dev, dt = L.device, L.dtype
    rows = torch.arange(h_out, device=dev, dtype=dt) + 0.5
    cols = torch.arange(w_out, device=dev, dtype=dt) + 0.5
    # input-pixel positions of the output pixel centres: (B, 1, H', 1) and (B, 1, 1, W')
    ys = (rows[None, :] * (image_size[:, 0:1].to(dt) / h_out))[:, None, :, None]
    xs = (cols[None, :] * (image_size[:, 1:2].to(dt) / w_out))[:, None, None, :]
    dx = xs - pos[..., 0, None, None]  # (B, N, 1, W')
    dy = ys - pos[..., 1, None, None]  # (B, N, H', 1)
    l11, l21, l22 = (L[..., 0, 0, None, None], L[..., 1, 0, None, None], L[..., 1, 1, None, None])
    xc = (dx / l11).expand(-1, -1, h_out, -1)  # forward substitution of L X_c = X - c - t
    yc = (dy - l21 * xc) / l22
    return torch.stack([xc, yc], dim=-1)


def render_instances(
    shape: nn.Module, params: dict[str, Tensor], size: Sequence[int], with_presence: bool = True
) -> Tensor:
    """Per-instance probabilities p(s | L⁻¹ (X - c - t)) · p(z) on a (H', W') grid (Costa et al. 2022, Eq. 1-2).

    Args:
        shape: maps canonical coordinates (..., 2) (x, y) to log p(s) (...), e.g. :class:`ImplicitShapeMLP`.
        params: dict with "L" (B, N, 2, 2) lower-triangular (acts on (x, y)), "t" (B, N, 2) and "centre"
            (B, N, 2) in input pixels (x, y), "presence" (B, N) in [0, 1] and "image_size" (B, 2) = (H, W) of the
            input in pixels (see the module docstring for the coordinate system).
        size: output (H', W'); any resolution (the paper: 1/4 in training, full at inference).
        with_presence: multiply by p(z) (True) or return the shape probability p(s) alone (False).

    Returns:
        (B, N, H', W') probabilities in [0, 1].
    """
    prob = torch.exp(shape(canonical_coordinates(params, size)))
    if with_presence:
        prob = prob * params["presence"][..., None, None]
    return prob


def shape_support_radius(shape: nn.Module, level: float, r_max: float = 1e4, angles: int = 180) -> float:
    """Largest canonical radius |X_c| at which the canonical shape has p(s) > ``level``, found by a polar scan.

    The scan samples ``angles`` directions at radii 0..8 (step 0.01) then geometrically up to ``r_max``; its result
    bounds the support {p(s) > level} of smooth shapes such as :class:`ImplicitShapeMLP` (a disc of radius ~1 at
    initialisation) up to the sampling step. 0.0 when no sample exceeds ``level``. Used to render instances on their
    boxes only (:func:`instance_boxes`); :class:`~cellseg_monai.inferers.CanonicalShapePredictor` also checks that
    no box border exceeds the level.
    """
    p = next(shape.parameters(), None)
    dev, dt = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    radii = torch.cat([torch.linspace(0.0, 8.0, 801), torch.logspace(math.log10(8.0), math.log10(r_max), 200)])
    theta = torch.arange(angles, dtype=torch.float64) * (2 * math.pi / angles)
    xy = torch.stack([radii[None, :] * torch.cos(theta)[:, None], radii[None, :] * torch.sin(theta)[:, None]], -1)
    with torch.no_grad():
        inside = torch.exp(shape(xy.to(device=dev, dtype=dt))).cpu() > level  # (angles, radii)
    hit = inside.any(0).nonzero()
    return float(radii[hit[-1, 0]]) if len(hit) else 0.0


def instance_boxes(params: dict[str, Tensor], radius: float, size: Sequence[int]) -> Tensor:
    """Pixel boxes of a (H', W') grid holding each instance's canonical disc |X_c| <= ``radius`` (plus one pixel).

    X = L X_c + c + t with |X_c| <= radius lies within radius · |row i of L| of c + t along axis i (x: |l11|, y:
    sqrt(l21² + l22²)); a pixel is in the box when its centre (input pixels, see the module docstring) is, with
    one pixel of margin on every side.

    Args:
        params: :meth:`CanonicalShapeNet.predict_parameters`'s dict ("L", "t", "centre", "image_size").
        radius: canonical radius, e.g. :func:`shape_support_radius`.
        size: output (H', W').

    Returns:
        (B, N, 4) int64 (y0, x0, y1, x1), half-open, clipped to the grid (may be empty).
    """
    h_out, w_out = int(size[0]), int(size[1])
    L, pos, image_size = params["L"], params["centre"] + params["t"], params["image_size"]
    sy = (image_size[:, 0].to(L.dtype) / h_out)[:, None]  # input pixels per output pixel, (B, 1)
    sx = (image_size[:, 1].to(L.dtype) / w_out)[:, None]
    ex = radius * L[..., 0, 0].abs()
    ey = radius * torch.sqrt(L[..., 1, 0] ** 2 + L[..., 1, 1] ** 2)
    y0 = torch.floor((pos[..., 1] - ey) / sy - 0.5) - 1
    y1 = torch.ceil((pos[..., 1] + ey) / sy - 0.5) + 2
    x0 = torch.floor((pos[..., 0] - ex) / sx - 0.5) - 1
    x1 = torch.ceil((pos[..., 0] + ex) / sx - 0.5) + 2
    lo = torch.zeros((), dtype=L.dtype, device=L.device)
    boxes = torch.stack([y0.clamp(lo, h_out), x0.clamp(lo, w_out), y1.clamp(lo, h_out), x1.clamp(lo, w_out)], -1)
    return boxes.nan_to_num(0.0).long()


def box_pixels(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pixels of M boxes, box after box, each in row-major order.

    Args:
        boxes: (M, 4) int (y0, x0, y1, x1), half-open; empty boxes have no pixel.

    Returns:
        (index, row, col), each (P,) int64 with P = the sum of the box areas: the box of every pixel and its position.
    """
    boxes = boxes.long()
    hgt = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    wid = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    area = hgt * wid
    index = torch.repeat_interleave(torch.arange(len(boxes), device=boxes.device), area)
    local = torch.arange(len(index), device=boxes.device) - (torch.cumsum(area, 0) - area)[index]
    w = wid[index]
    return index, boxes[index, 0] + torch.div(local, w, rounding_mode="floor"), boxes[index, 1] + local % w


def render_points(
    shape: nn.Module, params: dict[str, Tensor], index: Tensor, rows: Tensor, cols: Tensor, size: Sequence[int]
) -> Tensor:
    """p(s | L⁻¹ (X - c - t)) · p(z) of given (instance, pixel) pairs of a (H', W') grid (Eq. 1-2), e.g. the pixels
    of each instance's box (:func:`instance_boxes`, :func:`box_pixels`); the same values as :func:`render_instances`.

    Args:
        shape: canonical shape (..., 2) → log p(s) (...), e.g. :class:`ImplicitShapeMLP`.
        params: :meth:`CanonicalShapeNet.predict_parameters`'s dict, (B, N, ...) tensors.
        index: (P,) flat instance index b · N + n; rows, cols: (P,) output pixel of each pair.
        size: output (H', W').

    Returns:
        (P,) probabilities in [0, 1].
    """
    L, image_size = params["L"], params["image_size"]
    n = L.shape[1]
    dt = L.dtype
    flat_l = L.reshape(-1, 2, 2)[index]
    pos = (params["centre"] + params["t"]).reshape(-1, 2)[index]
    img = image_size.to(dt)[torch.div(index, n, rounding_mode="floor")]
    ys = (rows.to(dt) + 0.5) * (img[:, 0] / int(size[0]))
    xs = (cols.to(dt) + 0.5) * (img[:, 1] / int(size[1]))
    xc = (xs - pos[:, 0]) / flat_l[:, 0, 0]  # forward substitution of L X_c = X - c - t, as canonical_coordinates
    yc = ((ys - pos[:, 1]) - flat_l[:, 1, 0] * xc) / flat_l[:, 1, 1]
    return torch.exp(shape(torch.stack([xc, yc], dim=-1))) * params["presence"].reshape(-1)[index]


class CanonicalShapeNet(nn.Module):
    """Weakly supervised nuclei instances as affine placements of one learned canonical shape (Costa et al. 2022).

    Args:
        in_channels: image channels C.
        instances_per_cell: A, instances predicted per encoder feature cell (the paper: 2, i.e. N = 128 for 128 px).
        backbone: encoder depth, a key of :data:`BACKBONES` ("resnet50" is the paper's; "resnet10", the default,
            trains in minutes on a CPU). Ignored when ``encoder`` is given.
        features: encoder width of the stem / first stage (64 in a standard ResNet; 32 by default).
        norm: encoder norm (MONAI spec): "batch" (default) or e.g. ("group", {"num_groups": 8}) for tiny batches.
        encoder: optional injected feature extractor with attributes ``out_channels`` and ``stride`` (pixels per
            feature cell); replaces the built-in :class:`DilatedResNet`.
        shape: optional injected canonical shape (..., 2) → log p(s) (...); default :class:`ImplicitShapeMLP`.
        render_scale: ``forward`` renders at (round(H·s), round(W·s)) (1.0 = full; the paper trains at 0.25).
        base_scale: s, pixel scale of L at a raw output of 0 (default ``stride / 2``).
        max_offset: bound on |t| in feature cells via tanh; None = unbounded (linear, in units of ``stride``).
        presence_prior: initial p(z) of every instance (initial Σ p(z) ≈ presence_prior · N).
        dict_in_training: in training mode, ``forward`` returns ``{"combined": (B, 1, H', W'), "presence": (B, N)}``
            so the count loss sees p(z) through the trainer's single network call (DDP-safe, like torchvision's
            detection models that return losses in training); in eval mode it always returns the tensor.

    ``forward((B, C, H, W))`` returns ONE tensor, the combined mask probability (B, 1, H', W') in [0, 1].
    :meth:`predict_parameters`, :meth:`render_instances` and :meth:`predict_instances` expose the per-instance
    affine parameters and masks for post-processing and explainability; :meth:`canonical_shape` draws the shape.
    """

    # TorchScript reads module-level floats only as module constants
    __constants__ = ["_min_diag", "_softplus_one"]
    _min_diag = _MIN_DIAG
    _softplus_one = _SOFTPLUS_ONE

    def __init__(
        self,
        in_channels: int = 1,
        instances_per_cell: int = 2,
        backbone: str = "resnet10",
        features: int = 32,
        norm: str | tuple = "batch",
        encoder: nn.Module | None = None,
        shape: nn.Module | None = None,
        render_scale: float = 1.0,
        base_scale: float | None = None,
        max_offset: float | None = 1.0,
        presence_prior: float = 0.1,
        dict_in_training: bool = False,
    ) -> None:
        super().__init__()
        self.dict_in_training = bool(dict_in_training)
        if instances_per_cell < 1:
            raise ValueError(f"instances_per_cell must be >= 1; got {instances_per_cell!r}.")
        if not 0.0 < presence_prior < 1.0:
            raise ValueError(f"presence_prior must be in (0, 1); got {presence_prior!r}.")
        if render_scale <= 0 or (max_offset is not None and max_offset <= 0):
            raise ValueError(f"render_scale and max_offset must be > 0; got {render_scale!r}, {max_offset!r}.")
        self.encoder = encoder if encoder is not None else DilatedResNet(in_channels, backbone, features, norm)
        for attr in ("out_channels", "stride"):
            if not hasattr(self.encoder, attr):
                raise TypeError(
                    f"encoder must have an attribute {attr!r} (int); {type(self.encoder).__name__} has not."
                )
        self.shape = shape if shape is not None else ImplicitShapeMLP()
        self.instances_per_cell = int(instances_per_cell)
        self.stride = int(self.encoder.stride)
        self.render_scale = float(render_scale)
        self.base_scale = float(base_scale) if base_scale is not None else self.stride / 2.0
        if self.base_scale <= 0:
            raise ValueError(f"base_scale must be > 0; got {base_scale!r}.")
        self.max_offset = max_offset
        #: without gradients, :meth:`render` evaluates at most this many (instance, pixel) points at a time
        self.render_chunk_points = 1 << 22
        c = int(self.encoder.out_channels)
        self.affine_head = nn.Conv2d(c, 5 * self.instances_per_cell, 1)
        self.presence_head = nn.Conv2d(c, self.instances_per_cell, 1)
        with torch.no_grad():
            self.affine_head.weight.mul_(0.1)
            self.affine_head.bias.zero_()
            self.presence_head.bias.fill_(math.log(presence_prior / (1.0 - presence_prior)))

    def _per_instance(self, x: Tensor, k: int) -> Tensor:
        """(B, A·k, h, w) → (B, N, k) with instance n = (row·w + col)·A + a."""
        b, _, h, w = x.shape
        a = self.instances_per_cell
        return x.view(b, a, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, k)

    @torch.jit.export
    def predict_parameters(self, image: Tensor) -> dict[str, Tensor]:
        """Encoder + heads (Sec. 2.4): per-instance affine parameters and presence, in input pixels.

        Args:
            image: (B, C, H, W).

        Returns:
            dict of tensors, N = A·h·w, instance n at feature cell (row, col) = divmod(n // A, w):
            "L" (B, N, 2, 2) lower-triangular, diagonal > 0 (pixels per canonical unit, acting on (x, y));
            "t" (B, N, 2) translation (x, y) in pixels relative to the cell centre; "centre" (B, N, 2) the cell
            centres (x, y) in pixels; "presence" (B, N) p(z) in (0, 1); "image_size" (B, 2) = (H, W).
        """
        if image.ndim != 4:
            raise ValueError(f"image must be (B, C, H, W); got shape {shape_repr(image)}.")
        b, _, hh, ww = image.shape
        feats = self.encoder(image)
        h, w = feats.shape[-2:]
        raw = self._per_instance(self.affine_head(feats), 5)  # (B, N, 5)
        s = self.base_scale
        l11 = s * (F.softplus(raw[..., 0] + self._softplus_one) + self._min_diag)
        l22 = s * (F.softplus(raw[..., 2] + self._softplus_one) + self._min_diag)
        l21 = s * raw[..., 1]
        zero = torch.zeros_like(l11)
        L = torch.stack([torch.stack([l11, zero], -1), torch.stack([l21, l22], -1)], -2)
        if self.max_offset is None:
            t = self.stride * raw[..., 3:5]
        else:
            t = self.max_offset * self.stride * torch.tanh(raw[..., 3:5])
        presence = torch.sigmoid(self._per_instance(self.presence_head(feats), 1)[..., 0])
        cy = (torch.arange(h, device=image.device, dtype=L.dtype) + 0.5) * (hh / h)
        cx = (torch.arange(w, device=image.device, dtype=L.dtype) + 0.5) * (ww / w)
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")
        centre = torch.stack([gx, gy], -1).reshape(h * w, 1, 2).expand(-1, self.instances_per_cell, -1)
        centre = centre.reshape(1, -1, 2).expand(b, -1, -1)
        image_size = torch.tensor([hh, ww], device=image.device, dtype=L.dtype).expand(b, 2)
        return {"L": L, "t": t, "centre": centre, "presence": presence, "image_size": image_size}

    @torch.jit.export
    def render_instances(self, params: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        """Per-instance masks p(s) · p(z) (Eq. 1-2) at any (H', W'): (B, N, H', W') in [0, 1]."""
        # :func:`render_instances` with this network's shape (a module cannot be a TorchScript function argument)
        return torch.exp(self.shape(canonical_coordinates(params, size))) * params["presence"][..., None, None]

    def render_points(
        self, params: dict[str, Tensor], index: Tensor, rows: Tensor, cols: Tensor, size: tuple[int, int]
    ) -> Tensor:
        """p(s) · p(z) of (instance, pixel) pairs only, see :func:`render_points`: (P,) in [0, 1]."""
        return render_points(self.shape, params, index, rows, cols, size)

    def render(self, params: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        """Combined mask max_n p(s) · p(z) (Eq. 2) at any (H', W'): (B, 1, H', W') in [0, 1].

        Without gradients (inference) the instances are rendered in chunks and max-reduced as they come, so the
        memory is bounded by :attr:`render_chunk_points` whatever the image size (N grows with the image)."""
        n = params["L"].shape[1]
        per_instance = int(size[0]) * int(size[1]) * params["L"].shape[0]
        step = max(1, self.render_chunk_points // max(1, per_instance))
        if torch.is_grad_enabled() or step >= n:
            return self.render_instances(params, size).amax(dim=1, keepdim=True)
        out: Tensor | None = None
        for i in range(0, n, step):
            sub = {k: (v[:, i : i + step] if k != "image_size" else v) for k, v in params.items()}
            part = self.render_instances(sub, size).amax(dim=1, keepdim=True)
            out = part if out is None else torch.maximum(out, part)
        assert out is not None  # n > step >= 1: the loop ran
        return out

    def output_size(self, image: Tensor) -> tuple[int, int]:
        """(H', W') = (round(H · render_scale), round(W · render_scale)), at least 1."""
        return (
            max(1, int(round(image.shape[-2] * self.render_scale))),
            max(1, int(round(image.shape[-1] * self.render_scale))),
        )

    def forward(self, image: Tensor) -> Tensor | dict[str, Tensor]:
        """(B, C, H, W) image → (B, 1, H', W') combined mask probability in [0, 1] (see :meth:`output_size`); in
        training mode with ``dict_in_training``, ``{"combined": that, "presence": (B, N) p(z)}``."""
        params = self.predict_parameters(image)
        combined = self.render(params, self.output_size(image))
        if self.training and self.dict_in_training:
            return {"combined": combined, "presence": params["presence"]}
        return combined

    def predict_instances(self, image: Tensor, size: Sequence[int] | None = None) -> dict[str, Tensor]:
        """Parameters and masks for post-processing and explainability.

        Args:
            image: (B, C, H, W).
            size: rendering (H', W'); default :meth:`output_size`.

        Returns:
            :meth:`predict_parameters`'s dict plus "masks" (B, N, H', W') = p(s) · p(z) and "combined"
            (B, 1, H', W') = their maximum.
        """
        params = self.predict_parameters(image)
        masks = self.render_instances(params, size if size is not None else self.output_size(image))
        return {**params, "masks": masks, "combined": masks.amax(dim=1, keepdim=True)}

    def canonical_shape(self, size: int = 64, extent: float = 2.0) -> Tensor:
        """The learned canonical shape p(s | x, y, r) on [-extent, extent]² as a (size, size) image in (0, 1]."""
        if size < 1 or extent <= 0:
            raise ValueError(f"size must be >= 1 and extent > 0; got {size!r}, {extent!r}.")
        p = next(self.shape.parameters(), None)
        dev, dt = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
        c = (torch.arange(size, device=dev, dtype=dt) + 0.5) / size * 2 * extent - extent
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        with torch.no_grad():
            return torch.exp(self.shape(torch.stack([xx, yy], dim=-1)))
