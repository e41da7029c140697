"""ImPartial U-Net: per-pixel mixture components (probabilities and means) for scribble-supervised segmentation.

Martinez, Sapiro, Nadeem et al., "ImPartial: Partial Annotations for Cell Instance Segmentation",
bioRxiv 2021.01.20.427458 (reference code: github.com/nadeemlab/ImPartial).

Each class k (class 0 = background, 1.. = foreground classes) is modelled by ``classes[k] = m_k`` mixture
components; M = sum(classes) components in all. For every pixel the network predicts

* M component logits; a softmax over all M components gives the component probabilities π (Eq. 1), and the
  probability of class k is the sum of π over the components of class k;
* M component means μ_j ∈ R^C (C = ``in_channels``), the values the components impute at a blind-spot pixel for
  the self-supervised reconstruction loss (Eq. 1, see :mod:`cellseg_monai.losses.impartial`).

Raw output layout (one tensor, ``(B, M + M*C, H, W)``):

* channels ``[0:M]``: component logits, components of class 0 first, then class 1, ...;
* channels ``[M:]``: component means, component-major: component j, image channel c at ``M + j*C + c``.

:func:`split_output`, :func:`class_log_probabilities` and :func:`class_probabilities` decode that layout; the
losses and :mod:`cellseg_monai.transforms.mixture` use them (one implementation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import Tensor, nn

from cellseg_monai.torchscript import shape_repr

__all__ = [
    "ImPartialUNet",
    "check_classes",
    "class_log_probabilities",
    "class_probabilities",
    "num_raw_channels",
    "split_output",
]


def check_classes(classes: Sequence[int]) -> tuple[int, ...]:
    """Validate ``classes`` (components per class, background first) and return it as a tuple of ints.

    Raises:
        ValueError: fewer than 2 classes (background + at least one foreground class) or a count < 1.
    """
    try:
        out = tuple(int(m) for m in classes)
    except TypeError as e:
        raise ValueError(f"classes must be a sequence of component counts, e.g. (2, 2); got {classes!r}.") from e
    if len(out) < 2:
        raise ValueError(f"classes needs background + at least one foreground class, e.g. (2, 2); got {out}.")
    if any(m < 1 for m in out):
        raise ValueError(f"every class needs at least one mixture component; got classes={out}.")
    return out


def num_raw_channels(classes: Sequence[int], in_channels: int) -> int:
    """Number of raw output channels: M logits + M*C means, M = sum(classes), C = ``in_channels``."""
    m = sum(check_classes(classes))
    return m + m * int(in_channels)


def _check_raw(raw: Tensor, classes: Sequence[int], in_channels: int | None) -> int:
    """Check the channel axis (-3) of ``raw``; return M."""
    m = sum(check_classes(classes))
    if raw.ndim < 3:
        raise ValueError(f"raw output must be (..., channels, H, W); got shape {tuple(raw.shape)}.")
    n = raw.shape[-3]
    if in_channels is None:
        if n < m:
            raise ValueError(f"raw output has {n} channels, fewer than the {m} component logits of classes={classes}.")
    elif n != m + m * in_channels:
        raise ValueError(
            f"raw output has {n} channels; classes={tuple(classes)} with in_channels={in_channels} "
            f"needs M + M*C = {m + m * in_channels}."
        )
    return m


def split_output(raw: Tensor, classes: Sequence[int], in_channels: int) -> tuple[Tensor, Tensor]:
    """Split the raw ImPartial output into component logits and component means.

    Args:
        raw: ``(B, M + M*C, H, W)`` (or unbatched ``(M + M*C, H, W)``), layout as in the module docstring.
        classes: components per class, background first (M = sum).
        in_channels: C, image channels.

    Returns:
        ``logits`` ``(B, M, H, W)`` (unnormalised) and ``means`` ``(B, M, C, H, W)`` (image units, e.g. [0, 1]);
        without the batch axis when ``raw`` has none.
    """
    return _split_output(raw, _check_raw(raw, classes, in_channels), in_channels)


def _split_output(raw: Tensor, m: int, in_channels: int) -> tuple[Tensor, Tensor]:
    """:func:`split_output` without checks, given M (TorchScript-compatible)."""
    shape = list(raw.shape)
    logits = raw[..., :m, :, :]
    means = raw[..., m:, :, :].reshape(shape[:-3] + [m, in_channels, shape[-2], shape[-1]])
    return logits, means


def class_log_probabilities(raw: Tensor, classes: Sequence[int]) -> Tensor:
    """Log class probabilities log P(k | x) = logsumexp of the log component probabilities of class k.

    Computed stably as ``logsumexp(logits of class k) - logsumexp(all logits)``.

    Args:
        raw: ``(B, C_raw, H, W)`` or ``(C_raw, H, W)``; only the first M channels (the logits) are read.
        classes: components per class, background first.

    Returns:
        ``(B, K, H, W)`` (or ``(K, H, W)``), K = len(classes), values ≤ 0.
    """
    cls = check_classes(classes)
    _check_raw(raw, cls, None)
    return _class_log_probabilities(raw, list(cls))


def _class_log_probabilities(raw: Tensor, classes: list[int]) -> Tensor:
    """:func:`class_log_probabilities` without checks (TorchScript-compatible)."""
    logits = raw[..., : sum(classes), :, :]
    log_pi = torch.log_softmax(logits, dim=-3)
    parts = torch.split(log_pi, classes, dim=-3)
    return torch.cat([torch.logsumexp(p, dim=-3, keepdim=True) for p in parts], dim=-3)


def class_probabilities(raw: Tensor, classes: Sequence[int]) -> Tensor:
    """Class probabilities P(k | x): softmax over all M components, summed within each class.

    Args:
        raw: ``(B, C_raw, H, W)`` or ``(C_raw, H, W)``; only the first M channels (the logits) are read.
        classes: components per class, background first.

    Returns:
        ``(B, K, H, W)`` (or ``(K, H, W)``), values in [0, 1] summing to 1 over K.
    """
    return class_log_probabilities(raw, classes).exp()


def _double_conv(
    in_ch: int, out_ch: int, kernel_size: int, act: str | tuple, norm: str | tuple | None, dropout: float
) -> nn.Sequential:
    """Two MONAI ``Convolution`` blocks (conv → norm → dropout → act), 'same' padding."""
    drop = dropout if dropout > 0 else None
    return nn.Sequential(
        Convolution(2, in_ch, out_ch, kernel_size=kernel_size, act=act, norm=norm, dropout=drop),
        Convolution(2, out_ch, out_ch, kernel_size=kernel_size, act=act, norm=norm, dropout=drop),
    )


class ImPartialUNet(nn.Module):
    """U-Net predicting per-pixel mixture-component logits and means (ImPartial, Martinez et al. 2021).

    Encoder: ``depth`` down-samplings (max-pool 2), ``features * 2**level`` channels per level, two 3×3
    convolutions per level; decoder: transposed-convolution up-sampling, skip concatenation, two convolutions;
    head: 1×1 convolution to ``M + M*in_channels`` channels. Built from MONAI ``Convolution``/``UpSample``.
    Defaults follow the paper (depth 2, 64 features, kernel 3); the reference code's defaults are depth 4,
    32 features, ReLU, no batch norm (``act=("relu", {"inplace": True})``, ``norm=None`` here; in place because
    nothing reads a convolution's output before its ReLU, and a new full-size tensor per ReLU is memory traffic the
    inference does not need).

    Foreground-mean prior (``fg_mean_prior=True``): the mean predicted for each foreground component is
    ``mean over background components of μ_bg + offset``, the offset being the head's raw output for that
    component; background means are the head's raw outputs. The average over background components is used
    (rather than pairing component i of a class with background component i) so that any ``classes`` works.
    The reference code (nadeemlab/ImPartial, ``general/networks.py``) predicts every mean freely
    (``fg_mean_prior=False`` reproduces that).

    Args:
        in_channels: C, image channels.
        classes: components per class ``(m_0, m_1, ...)``, class 0 = background; e.g. (2, 2) background + nuclei,
            (2, 2, 2) background + nuclei + cytoplasm.
        features: channels at the first level (doubled per level).
        depth: number of down-samplings (≥ 1); H and W must be divisible by ``2**depth``.
        kernel_size: odd convolution kernel size.
        dropout: dropout probability in every convolution block (0 = none).
        fg_mean_prior: parameterise foreground means as background mean + offset (see above).
        output: ``"raw"`` → ``(B, M + M*C, H, W)`` raw layout (module docstring of
            :mod:`cellseg_monai.networks.impartial_unet`); ``"probabilities"`` → class probabilities
            ``(B, K, H, W)`` (single tensor for inference configs / ``verify_net_in_out``).
        act: activation (MONAI name or (name, args)).
        norm: normalisation (MONAI name or None).

    Input: ``(B, in_channels, H, W)`` float, roughly [0, 1].
    """

    def __init__(
        self,
        in_channels: int = 1,
        classes: Sequence[int] = (2, 2),
        features: int = 64,
        depth: int = 2,
        kernel_size: int = 3,
        dropout: float = 0.0,
        fg_mean_prior: bool = True,
        output: str = "raw",
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = None,
    ) -> None:
        super().__init__()
        self.classes = check_classes(classes)
        self._class_sizes = list(self.classes)  # the same as a list: TorchScript has no tuple of any length
        if int(in_channels) < 1:
            raise ValueError(f"in_channels must be >= 1; got {in_channels}.")
        if int(depth) < 1:
            raise ValueError(f"depth (number of down-samplings) must be >= 1; got {depth}.")
        if int(features) < 1:
            raise ValueError(f"features must be >= 1; got {features}.")
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer; got {kernel_size}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
        if output not in ("raw", "probabilities"):
            raise ValueError(f"output must be 'raw' or 'probabilities'; got {output!r}.")
        self.in_channels = int(in_channels)
        self.depth = int(depth)
        self.fg_mean_prior = bool(fg_mean_prior)
        self.output = output
        self.num_components = sum(self.classes)
        self.out_channels = num_raw_channels(self.classes, self.in_channels)

        widths = [int(features) * 2**level for level in range(self.depth + 1)]
        k, drop = int(kernel_size), float(dropout)
        self.encoders = nn.ModuleList([_double_conv(self.in_channels, widths[0], k, act, norm, drop)])
        self.encoders.extend(_double_conv(widths[i - 1], widths[i], k, act, norm, drop) for i in range(1, len(widths)))
        self.pool = nn.MaxPool2d(2)
        self.upsamples = nn.ModuleList(
            UpSample(2, widths[i], widths[i - 1], scale_factor=2, mode="deconv") for i in range(self.depth, 0, -1)
        )
        self.decoders = nn.ModuleList(
            _double_conv(2 * widths[i - 1], widths[i - 1], k, act, norm, drop) for i in range(self.depth, 0, -1)
        )
        self.head = Convolution(2, widths[0], self.out_channels, kernel_size=1, conv_only=True)

    # one implementation, also reachable from the class
    split_output = staticmethod(split_output)
    class_probabilities = staticmethod(class_probabilities)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` → raw ``(B, M + M*C, H, W)`` or class probabilities ``(B, K, H, W)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W); got shape {shape_repr(x)}.")
        factor = 2**self.depth
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"input height and width must be divisible by 2**depth = {factor} (depth={self.depth}); got "
                f"({x.shape[-2]}, {x.shape[-1]}). Pad the image or use tiles (roi_size) that are multiples of {factor}."
            )
        skips: list[Tensor] = []
        h = x
        for level, enc in enumerate(self.encoders):
            h = enc(h if level == 0 else self.pool(h))
            skips.append(h)
        h = skips.pop()
        for up, dec in zip(self.upsamples, self.decoders, strict=True):
            h = dec(torch.cat([skips.pop(), up(h)], dim=1))
        raw = self.head(h)
        if self.fg_mean_prior:
            raw = self._apply_fg_mean_prior(raw)
        if self.output == "probabilities":
            return _class_log_probabilities(raw, self._class_sizes).exp()  # = class_probabilities, scriptable
        return raw

    def _apply_fg_mean_prior(self, raw: Tensor) -> Tensor:
        """Foreground means := mean of background means + head output (offset); logits, bg means unchanged."""
        logits, means = _split_output(raw, self.num_components, self.in_channels)  # means (B, M, C, H, W)
        m0 = self.classes[0]
        bg = means[:, :m0]
        fg = bg.mean(dim=1, keepdim=True) + means[:, m0:]
        means = torch.cat([bg, fg], dim=1).flatten(1, 2)
        return torch.cat([logits, means], dim=1)
