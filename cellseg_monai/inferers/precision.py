"""Run any inferer's network in the fastest precision and memory layout the device has, returning float32.

:class:`FastInferer` wraps another inferer (MONAI's or ours). Per call it

- puts the network's parameters and the input in ``channels_last`` layout for the call (oneDNN's and cuDNN's fast
  path for 2D convolutions) and gives the network back in the layout it came in (a trainer that validates with it
  trains on as before, bit for bit);
- runs the network under :func:`torch.autocast` in ``bfloat16`` on a CPU that computes it natively (Intel AMX or
  AVX512-BF16; elsewhere bfloat16 is emulated and slower than float32, so ``"auto"`` keeps float32) and in
  ``float16`` on CUDA (automatic mixed precision);
- or, with ``cast=True``, runs it with its floating-point parameters, buffers and input cast to that precision
  (:func:`torch.func.functional_call` on a cast copy of the weights made once per call; the module itself is not
  touched): no autocast, so no float32 ↔ bfloat16 copies around the layers autocast keeps in float32 (MONAI's
  instance norm in the supervised U-Net: its network 2.71 → 1.40 s/MP together with channels_last off,
  ``benchmarks/README.md``);
- returns float32 outputs, so the stitching of tiles, the probabilities and the post-processing work in float32.

``scope="network"`` (default) applies all of this to each network call the inner inferer makes (e.g. each batch of
tiles of a sliding window), so blending happens in float32; ``scope="inferer"`` wraps the whole inner call, for
inferers whose per-tile predictor calls parts of the network itself (the canonical-shape predictor).

``training=True`` makes it a trainer's inferer (``train#inferer``, config id ``train_precision``): the forward pass
under bfloat16 autocast with gradients flowing back to the float32 weights, never float16 (no loss scaling), and in
float32 the inner inferer untouched; ``python benchmarks/train_precision.py`` measures the seconds per iteration.

``python benchmarks/speed.py`` measures what this gives each bundle (``benchmarks/results/speed-cpu2.md``). A bundle's
``inference.json`` exposes the choice as ``inference_precision`` (``"auto"``, ``"float32"``, ``"bfloat16"``,
``"float16"``); its docs give the ``val`` scores of both precisions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

__all__ = ["PRECISIONS", "FastInferer", "autocast_dtype", "cpu_has_native_bfloat16"]

#: accepted ``precision`` values
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def cpu_has_native_bfloat16() -> bool:
    """True when this CPU computes bfloat16 matrix products in hardware (Intel AMX tiles or AVX512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and bool(check()):
                return True
        except RuntimeError:  # pragma: no cover - a build without the check
            continue
    return False


def _cuda_has_bfloat16(device: torch.device | str | None = None) -> bool:
    """True when the CUDA device computes bfloat16 natively (compute capability 8.0+, Ampere and later; older GPUs
    only emulate it, which ``torch.cuda.is_bf16_supported()`` also counts)."""
    return bool(torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8)


def autocast_dtype(precision: str, device: torch.device | str, training: bool = False) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, None for float32.

    ``"auto"``: float16 on CUDA, bfloat16 on a CPU with native bfloat16 (:func:`cpu_has_native_bfloat16`), else
    float32. An explicit ``"bfloat16"``/``"float16"`` is used as asked (``"float16"`` on a CPU is refused: CPU
    autocast computes it slowly and with float16's narrow range).

    ``training=True`` (a trainer's forward pass, gradients flowing back through it): float16 gradients underflow
    without loss scaling, which MONAI's trainers only do for their own CUDA ``amp``, so float16 is never chosen:
    ``"auto"`` is bfloat16 on a CUDA device that computes it (Ampere and later) and float32 on one that does not,
    and an explicit ``"float16"`` is refused.

    Raises:
        ValueError: an unknown precision, float16 on a CPU, or float16 for training.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}.")
    kind = torch.device(device).type
    if precision == "float32":
        return None
    if precision == "float16" and training:
        raise ValueError(
            "precision 'float16' is not used for training (its gradients need loss scaling); use 'bfloat16' or "
            "'auto', or MONAI's own `amp` of the trainer on CUDA."
        )
    if precision == "auto":
        if kind == "cuda":
            if training:
                return torch.bfloat16 if _cuda_has_bfloat16(device) else None
            return torch.float16
        return torch.bfloat16 if kind == "cpu" and cpu_has_native_bfloat16() else None
    if precision == "float16" and kind == "cpu":
        raise ValueError("precision 'float16' is for CUDA; on a CPU use 'bfloat16' (or 'auto').")
    return torch.bfloat16 if precision == "bfloat16" else torch.float16


def _to_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, Mapping):
        return type(out)({k: _to_float32(v) for k, v in out.items()}) if isinstance(out, dict) else out
    if isinstance(out, Sequence) and not isinstance(out, str):
        return type(out)(_to_float32(v) for v in out) if isinstance(out, (list, tuple)) else out
    return out


def _channels_last(x: Any) -> Any:
    """A 4D tensor in channels_last layout, as a plain tensor (a batched MetaTensor's layout copy would lose its
    batch metadata; the network needs none)."""
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        x = x.as_tensor() if isinstance(x, MetaTensor) else x
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _cast_state(network: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The network's floating-point parameters and buffers cast to ``dtype`` (integer buffers as they are)."""
    state = dict(network.named_parameters())
    state.update(network.named_buffers())
    return {k: v.detach().to(dtype) if v.is_floating_point() else v for k, v in state.items()}


class _FastNetwork:
    """``network`` called under autocast (or with cast weights, ``cast``) with a channels_last input, outputs cast to
    float32; other attributes are the network's."""

    def __init__(
        self, network: Callable[..., Any], dtype: torch.dtype | None, channels_last: bool, cast: bool = False
    ) -> None:
        self._network = network
        self._dtype = dtype
        self._channels_last = channels_last
        self._state = _cast_state(network, dtype) if cast and dtype is not None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._network, name)

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if self._channels_last:
            x = _channels_last(x)
        if self._state is not None:
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                x = x.to(self._dtype)
            out = torch.func.functional_call(self._network, self._state, (x, *args), kwargs)
            return _to_float32(out)
        device = x.device.type if isinstance(x, torch.Tensor) else "cpu"
        with torch.autocast(device, dtype=self._dtype or torch.float32, enabled=self._dtype is not None):
            out = self._network(x, *args, **kwargs)
        return _to_float32(out) if self._dtype is not None else out


class FastInferer(Inferer):
    """``inferer`` with the network in autocast precision and channels_last layout, float32 outputs (module docstring).

    Args:
        inferer: the inferer to run (e.g. ``SlidingWindowInferer``, ``SimpleInferer``,
            :class:`~cellseg_monai.inferers.FittedSlidingWindowInferer`).
        precision: ``"auto"`` (default), ``"float32"``, ``"bfloat16"`` or ``"float16"`` (CUDA): see
            :func:`autocast_dtype`.
        channels_last: convert the network (once) and its inputs to channels_last.
        scope: ``"network"``: each network call the inferer makes; ``"inferer"``: the whole inner call.
        cast: instead of autocast, run the network with its floating-point weights and input cast to the precision
            (scope ``"network"`` and an ``nn.Module`` network only). Has no effect in float32.
        training: the inferer of a trainer (``train#inferer``): gradients flow through the autocast forward pass
            (bfloat16 needs no loss scaling), ``"auto"`` never means float16 (:func:`autocast_dtype`), and ``cast``
            (weights copied without gradients) is refused. A bundle's ``train.json`` exposes it as
            ``train_precision``.

    Raises:
        ValueError: an unknown precision or scope, ``cast`` with scope ``"inferer"`` or for training, or
            ``"float16"`` for training.
    """

    def __init__(
        self,
        inferer: Callable[..., Any],
        precision: str = "auto",
        channels_last: bool = True,
        scope: str = "network",
        cast: bool = False,
        training: bool = False,
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}.")
        if training and cast:
            raise ValueError("cast=True copies the weights without gradients: it cannot be used for training.")
        if training and precision == "float16":
            autocast_dtype(precision, "cuda", training=True)  # raises with the reason
        if scope not in ("network", "inferer"):
            raise ValueError(f"scope must be 'network' or 'inferer'; got {scope!r}.")
        if cast and scope != "network":
            raise ValueError("cast=True casts the weights of each network call: it needs scope='network'.")
        self.inferer = inferer
        self.cast = bool(cast)
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.scope = scope
        self.training = bool(training)

    def _prepare(self, network: Any) -> bool:
        """Put the network's 4D weights in channels_last; True when they were not (to be restored after the call)."""
        if not self.channels_last or not isinstance(network, torch.nn.Module):
            return False
        if isinstance(network, torch.nn.parallel.DistributedDataParallel):
            return False  # DDP's gradient buckets follow the layout the weights had when it was built: leave it
        weights = [p for p in network.parameters() if p.ndim == 4]
        if weights and not all(p.is_contiguous(memory_format=torch.channels_last) for p in weights):
            network.to(memory_format=torch.channels_last)
            return True
        return False

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        dtype = autocast_dtype(self.precision, inputs.device, training=self.training)
        if self.training and dtype is None:  # float32 training: the inner inferer as it is, bit for bit
            return self.inferer(inputs, network, *args, **kwargs)
        converted = self._prepare(network)
        try:
            if self.scope == "network":
                cast = self.cast and isinstance(network, torch.nn.Module)
                fast = _FastNetwork(network, dtype, self.channels_last, cast)
                return self.inferer(inputs, fast, *args, **kwargs)
            with torch.autocast(inputs.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                out = self.inferer(inputs, network, *args, **kwargs)  # the inner inferer's own inputs (and metadata)
            return _to_float32(out) if dtype is not None else out
        finally:
            if converted:  # the network is left as it came: a trainer validating with it keeps its own layout
                network.to(memory_format=torch.contiguous_format)
