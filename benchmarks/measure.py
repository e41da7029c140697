"""What a benchmark measures besides accuracy: the machine, its matmul peak, FLOPs, parameters and peak memory.

Each measurement is a small function that the benchmark (``benchmarks/run.py``) and its tests use directly:

- :func:`machine_info` — CPU model, cores, torch threads, GPU, library versions;
- :func:`matmul_gflops` — the dense matmul throughput of a device (the physical limit a network can approach);
- :func:`conv3x3_gflops` — the throughput of a large 3×3 convolution, the other practical peak (oneDNN's direct
  convolution may beat the matmul of the same torch build, so an efficiency is taken against the larger of the two);
- :func:`forward_flops` — FLOPs of one forward pass, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (multiply-add = 2 FLOPs; convolutions, matmuls and attention, not element-wise ops);
- :func:`parameter_count`;
- :func:`run_with_peak_rss` — runs a command as a child process and returns that child's own peak resident set
  size (``ru_maxrss`` from ``os.wait4``), measured so that the parent's memory cannot leak into it.
"""

from __future__ import annotations

import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ChildRun",
    "conv3x3_gflops",
    "cpu_model",
    "efficiency",
    "forward_flops",
    "machine_info",
    "matmul_gflops",
    "measure_peaks",
    "median_seconds",
    "parameter_count",
    "peaks_for",
    "run_with_peak_rss",
]


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``, else ``"unknown"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """The machine a benchmark ran on.

    Returns:
        ``{"cpu": str, "cores": int (logical CPUs usable by this process), "torch_threads": int, "gpu": str | None,
        "cuda": str | None, "python": str, "torch": str, "monai": str, "platform": str}``.
    """
    import monai

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "cuda": torch.version.cuda if gpu else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "platform": platform.platform(),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    fn: Callable[[], object], repeats: int, device: torch.device | str = "cpu", warmup: int = 1
) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls.

    On a CUDA ``device`` the device is synchronised before the clock is read, so queued kernels are counted.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(
    n: int = 2048, repeats: int = 10, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Dense matmul throughput of ``device``: ``2 n³`` FLOPs of ``torch.mm`` on (n, n) matrices per median second.

    This is the practical peak a convolutional network's forward pass can approach on the device (convolutions
    are lowered to matrix products), measured with the same torch build and thread count the models use.

    Args:
        n: matrix side; 2048 float32 (16 MiB per matrix) is large enough to leave the cache regime.
        repeats: timed repetitions (median), after one warm-up product.
        device: ``"cpu"`` or a CUDA device.
        dtype: element type (float32 by default, the models' inference dtype).

    Returns:
        GFLOP/s (1e9 floating-point operations per second), > 0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.rand(n, n, generator=gen, dtype=dtype).to(device)
    b = torch.rand(n, n, generator=gen, dtype=dtype).to(device)
    out = torch.empty(n, n, dtype=dtype, device=device)
    seconds = median_seconds(lambda: torch.mm(a, b, out=out), repeats=repeats, device=device)
    return 2.0 * n**3 / seconds / 1e9


def conv3x3_gflops(
    channels: int = 64,
    size: int = 256,
    batch: int = 4,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> float:
    """Throughput of a large 3×3 convolution (``channels`` → ``channels``, padding 1, no gradient), in ``dtype``
    (float32; bfloat16 runs channels_last, the layout :class:`cellseg_monai.inferers.FastInferer` uses).

    FLOPs are ``2·C·C·9·H·W`` per image (a multiply-add = 2 FLOPs, the count of :func:`forward_flops`), so a
    network's achieved GFLOP/s and this peak are on the same scale.

    Returns:
        GFLOP/s, > 0.
    """
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=gen).to(device=device, dtype=dtype)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device=device, dtype=dtype).eval()
    if dtype != torch.float32:
        x, conv = x.contiguous(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
    with torch.no_grad():
        seconds = median_seconds(lambda: conv(x), repeats=repeats, device=device)
    return 2.0 * channels * channels * 9 * size * size * batch / seconds / 1e9


def forward_flops(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of ``module(*inputs)`` (no gradient), counted by ``torch.utils.flop_counter.FlopCounterMode``.

    A multiply-add counts 2 FLOPs: a ``Conv2d`` with C_in → C_out channels and a k×k kernel on an H×W output
    costs ``2·C_in·C_out·k²·H·W`` per image, a ``Linear`` layer ``2·in·out`` per row. Bias additions, activations
    and normalisations are not counted (they are memory-bound, not FLOP-bound).

    Args:
        module: any ``torch.nn.Module`` (its mode is left as it is).
        inputs: its positional inputs, e.g. one (B, C, H, W) tile.

    Returns:
        The total FLOP count (0 for a module without counted operations).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def parameter_count(module: torch.nn.Module) -> int:
    """Number of scalar parameters of ``module`` (trainable or not)."""
    return int(sum(p.numel() for p in module.parameters()))


@dataclass(frozen=True)
class ChildRun:
    """Outcome of :func:`run_with_peak_rss`.

    Attributes:
        returncode: the child's exit status (128 + N: killed by signal N; 127: the program could not be started).
        seconds: wall-clock seconds from start to exit.
        peak_rss_mb: the child's peak resident set size in MiB (``ru_maxrss`` of that child and of the
            descendants it waited for — e.g. data-loader workers — not of the parent).
        log: file holding the child's stdout and stderr.
    """

    returncode: int
    seconds: float
    peak_rss_mb: float
    log: Path


# Runs argv[2:] as its own child and writes that child's ru_maxrss (from wait4) to argv[1]. Started with -S -I it is
# a ~10 MB process, so the program's pre-exec memory (the forked copy of this launcher) cannot dominate its peak.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        print(f"cannot run {sys.argv[2]!r}: {e}", file=sys.stderr)
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_with_peak_rss(
    cmd: Sequence[str],
    log: str | os.PathLike,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> ChildRun:
    """Run ``cmd`` to completion, stdout and stderr to ``log``, and measure its wall time and peak RSS.

    The peak is the ``ru_maxrss`` that ``os.wait4(pid, 0)`` returns for the child that runs ``cmd``. On Linux a
    child's ``ru_maxrss`` also covers the memory it had before ``exec`` — a forked (or vforked) copy of its parent,
    which here is a process with torch loaded (hundreds of MB). So ``subprocess.Popen`` starts a ~10 MB Python
    launcher that forks, execs ``cmd``, reaps it with ``os.wait4`` and reports that grandchild's ``ru_maxrss``
    (KiB on Linux, bytes on macOS). A killed child exits with 128 + signal.

    Raises:
        ValueError: ``cmd`` is empty.
    """
    if not cmd:
        raise ValueError("cmd must name a program")
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    rss_file = log.with_name(log.name + ".maxrss")
    rss_file.unlink(missing_ok=True)
    launcher = [sys.executable, "-S", "-I", "-c", _LAUNCHER, str(rss_file), *cmd]
    with open(log, "w") as f:
        start = time.monotonic()
        proc = subprocess.Popen(
            launcher, cwd=cwd, env=None if env is None else dict(env), stdout=f, stderr=f, start_new_session=True
        )
        try:
            code = proc.wait()
        except BaseException:  # e.g. Ctrl-C: stop the launcher and the program (its own process group) too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        seconds = time.monotonic() - start
    maxrss = float(rss_file.read_text()) if rss_file.is_file() else math.nan
    rss_file.unlink(missing_ok=True)
    scale = 1.0 / 2**20 if sys.platform == "darwin" else 1.0 / 2**10
    return ChildRun(returncode=code, seconds=seconds, peak_rss_mb=maxrss * scale, log=log)


def efficiency(flops: float, seconds: float, peaks_gflops: Sequence[float]) -> tuple[float, float]:
    """Achieved GFLOP/s of ``flops`` done in ``seconds``, and its fraction of the largest measured peak.

    A fraction above 1 means the FLOP count or a peak is wrong (the peak is a measurement, not a bound): it is
    reported as is, never clipped, so that the table shows it.

    Raises:
        ValueError: no positive peak or time.
    """
    peak = max(peaks_gflops, default=0.0)
    if peak <= 0 or seconds <= 0:
        raise ValueError(f"need a positive time and peak, got {seconds} s and peaks {list(peaks_gflops)}")
    achieved = flops / seconds / 1e9
    return achieved, achieved / peak


def measure_peaks(dtype: Any = None, device: torch.device | str = "cpu") -> dict[str, float]:
    """Matmul and 3×3-convolution peaks of this process on ``device`` in float32, and in ``dtype`` too when a
    bundle computes in it (bfloat16 on an AMX CPU: keys ``matmul_bfloat16``, ``conv3x3_bfloat16``)."""
    n = 4096 if str(device).startswith("cuda") else 2048
    peaks = {"matmul": matmul_gflops(n, repeats=5, device=device), "conv3x3": conv3x3_gflops(device=device)}
    if dtype is not None and dtype != torch.float32:
        name = str(dtype).replace("torch.", "")
        peaks[f"matmul_{name}"] = matmul_gflops(n, repeats=5, device=device, dtype=dtype)
        peaks[f"conv3x3_{name}"] = conv3x3_gflops(device=device, dtype=dtype)
    return peaks


def peaks_for(precision: str, peaks: dict[str, float]) -> list[float]:
    """The peaks that fit a bundle computing in ``precision`` ("float32", "bfloat16", ...): that precision's."""
    if precision == "float32":
        return [v for k, v in peaks.items() if "_" not in k]
    return [v for k, v in peaks.items() if k.endswith("_" + precision)]
