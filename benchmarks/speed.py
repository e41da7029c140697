"""Inference and training speed of every bundle and of three peers (Cellpose 3, StarDist, InstanSeg), one command.

    python benchmarks/speed.py                       # everything (aim: < 15 min on a quiet 2-core CPU)
    python benchmarks/speed.py --quick               # 512² and 1024² only, 1 repeat, 3 training iterations
    python benchmarks/speed.py --bundles impartial --peers none --sizes 512 1024

What is measured (issue 16, points 1, 3, 4), each in a child process of its own (so that its peak RSS is its own, and
every method runs with the same thread count, ``--threads``, default: the CPUs this process may use):

- **full inference** of each bundle with its shipped weights (``bundles/<name>/models/model.pt``), loading excluded:
  the config's ``preprocessing`` is applied first (reading the image), then timed: ``inferer(image, network)``
  (*network*) and ``postprocessing`` (*post*: instances, the label TIFF, overlay PNG and CSV written to disk, as
  ``cellseg-monai segment`` does). Seconds per megapixel at each ``--sizes`` (square synthetic fluorescence images
  of nuclei), median over ``--repeats`` after one warm-up call (``--repeats-large`` for sizes ≥ 2048);
- **FLOPs of what ran**: ``torch.utils.flop_counter.FlopCounterMode`` over the same ``inferer(image, network)`` call
  (tile overlap, padding and every tile included) on the same image, divided by the median network time of that
  image: achieved GFLOP/s, and its fraction of the *larger* of two peaks measured in this run with the same threads —
  dense float32 matmul (:func:`benchmarks.measure.matmul_gflops`) and a large 3×3 convolution
  (:func:`benchmarks.measure.conv3x3_gflops`);
- **post-processing time vs number of objects**: a 1024² image holding 10, 100, 1000 and 5000 synthetic nuclei;
  the network runs once, the post-processing is timed (median of ``--repeats``); the number of objects the bundle
  found is reported beside the number drawn;
- **training throughput**: patches per second of the bundle's own ``train.json`` trainer (default batch, embedded
  sample data), median over iterations after two warm-up iterations;
- **profile**: ``torch.profiler`` over one network call at 1024², top operators by self CPU time;
- **peers**, in ``.venv-peers`` (``bash benchmarks/install_peers.sh``), on the same image files: full inference
  (their network + their post-processing + writing a label TIFF), random weights (their pretrained weights are
  downloaded at first use, which this machine cannot do): a speed comparison only.

Writes ``<out>/speed-<machine>.md`` and ``.json`` (ratios: peer s/MP ÷ bundle s/MP at 1024², > 1 = the bundle is
faster) and prints the total runtime. The machine's load (``/proc/loadavg``) before and after is recorded: figures
from a busy machine are slower than the machine can do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# stdlib only at module level: the peers' venv runs this file too (``--child peer``), without torch's friends here
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

__all__ = [
    "BUNDLES",
    "PEERS",
    "jittered_grid_nuclei",
    "main",
    "peer_ratios",
    "reference_size",
    "s_per_mp",
    "train_throughput",
]

BUNDLES = ("impartial", "supervised_unet", "lacss", "canonical_shape", "partial_maskrcnn", "sparse_seunet")
PEERS = ("cellpose", "stardist", "instanseg")
OBJECT_COUNTS = (10, 100, 1000, 5000)
PEER_VENV = REPO / ".venv-peers"


# --- pure functions (tests/benchmarks/test_speed.py) ------------------------------------------------------------------


def jittered_grid_nuclei(size: int, count: int, seed: int = 0) -> tuple[Any, Any]:
    """A synthetic fluorescence image of ``count`` round nuclei on a ``size``×``size`` canvas, and its labels.

    Nuclei sit one per cell of a jittered grid (so they never touch), radius ``min(9, 0.35 · cell side)`` px,
    intensity 0.6–1.0 on a 0.05 background, plus Gaussian noise (σ 0.03).

    Returns:
        ``(image, labels)``: float32 (H, W) in [0, 1] and uint16 (H, W) with ids 1..count.

    Raises:
        ValueError: the nuclei cannot be drawn at least 2 px in radius.
    """
    import numpy as np

    side = math.ceil(math.sqrt(count))
    cell = size / side
    radius = min(9.0, 0.35 * cell)
    if radius < 2:
        raise ValueError(f"{count} nuclei do not fit a {size}² image (radius {radius:.1f} px)")
    rng = np.random.default_rng(seed)
    slots = rng.permutation(side * side)[:count]
    image = np.full((size, size), 0.05, np.float32)
    labels = np.zeros((size, size), np.uint16)
    r = int(math.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = yy**2 + xx**2 <= radius**2
    slack = max(cell / 2 - radius - 1, 0)
    for i, slot in enumerate(slots, start=1):
        cy = (slot // side + 0.5) * cell + rng.uniform(-slack, slack)
        cx = (slot % side + 0.5) * cell + rng.uniform(-slack, slack)
        y0, x0 = int(round(cy)) - r, int(round(cx)) - r
        ys, xs = slice(max(y0, 0), min(y0 + 2 * r + 1, size)), slice(max(x0, 0), min(x0 + 2 * r + 1, size))
        sub = disc[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        labels[ys, xs][sub] = i
        image[ys, xs][sub] = rng.uniform(0.6, 1.0)
    image += rng.normal(0, 0.03, image.shape).astype(np.float32)
    return np.clip(image, 0, 1), labels


def s_per_mp(seconds: float, height: int, width: int) -> float:
    """Seconds per megapixel (1e6 pixels)."""
    return seconds / (height * width / 1e6)


def peer_ratios(bundle_s_per_mp: float, peers: dict[str, float | None]) -> dict[str, float | None]:
    """``peer s/MP ÷ bundle s/MP`` for each peer (> 1: the bundle is that many times faster); None where unknown."""
    return {name: (value / bundle_s_per_mp if value and bundle_s_per_mp > 0 else None) for name, value in peers.items()}


# --- child: one bundle --------------------------------------------------------------------------------------------


def _median_times(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, Any]:
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def train_throughput(name: str, work: Path, iterations: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Patches per second of ``bundles/<name>/configs/train.json``'s trainer on the embedded sample data, with
    ``overrides`` (config id → value, e.g. ``{"train_precision": "float32"}``) applied first."""
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / name / "configs" / "train.json"))
    parser["bundle_root"] = str(REPO / "bundles" / name)
    parser["output_dir"] = str(work / f"train-{name}")
    for key, value in (overrides or {}).items():
        parser[key] = value
    parser["train#trainer#max_epochs"] = 1000
    if "val_interval" in parser.get():
        parser["val_interval"] = 10**6  # validation runs between epochs; keep it out of the run altogether
    trainer = parser.get_parsed_content("train#trainer")
    times: list[float] = []
    patches: list[int] = []
    state = {"t": 0.0}

    def started(engine: Any) -> None:
        state["t"] = time.perf_counter()

    def completed(engine: Any) -> None:
        times.append(time.perf_counter() - state["t"])
        batch = engine.state.batch
        image = batch.get("image") if isinstance(batch, dict) else None
        patches.append(int(image.shape[0]) if image is not None else len(batch))
        if len(times) >= iterations + 2:
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    trainer.run()
    timed, counts = times[2:] or times, patches[2:] or patches
    per_patch = statistics.median([t / max(c, 1) for t, c in zip(timed, counts, strict=True)])
    return {
        "iterations_timed": len(timed),
        "batch_patches": statistics.median(counts),
        "s_per_iteration": statistics.median(timed),
        "patches_per_s": 1.0 / per_patch,
    }


def _profile(inferer: Any, network: Any, image: Any, top: int = 12) -> list[dict[str, Any]]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        inferer(image, network)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    return [
        {"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total, "calls": e.count}
        for e in rows[:top]
    ]


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def bundle_child(args: argparse.Namespace) -> dict[str, Any]:
    """Everything measured for one bundle (runs in its own process)."""
    import numpy as np
    import tifffile
    import torch
    from monai.bundle import ConfigParser
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.infer import load_state_dict
    from benchmarks.measure import measure_peaks, parameter_count

    name, work = args.name, Path(args.work)
    root = REPO / "bundles" / name
    out_dir = work / f"out-{name}"
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["bundle_root"] = str(root)
    parser["output_dir"] = str(out_dir)
    device = torch.device(args.device)
    parser["device"] = f"$torch.device('{device}')"
    network = parser.get_parsed_content("network")
    network.load_state_dict(load_state_dict(root / "models" / "model.pt", device))
    network.eval()
    preprocessing = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    postprocessing = parser.get_parsed_content("postprocessing")

    def load(path: Path) -> dict[str, Any]:
        return preprocessing({"image": str(path), "id": path.stem})

    def net(item: dict[str, Any]) -> Any:
        with torch.no_grad():
            out = inferer(item["image"][None].to(device), network)
        _sync(device)  # a GPU runs asynchronously: the time is the work's, not the launch's
        return out

    def post(item: dict[str, Any], pred: Any) -> None:
        postprocessing({**item, "pred": pred[0]})

    result: dict[str, Any] = {"bundle": name, "params": parameter_count(network), "sizes": {}}
    from cellseg_monai.inferers import autocast_dtype

    # the precision the bundle's FastInferer computes in here, and the peaks again in this process right before its
    # own timings (same threads, same neighbours on the machine), in float32 and in that precision
    precision = str(parser["inference_precision"]) if "inference_precision" in parser else "float32"
    dtype = autocast_dtype(precision, device.type)
    result["precision"] = str(dtype or torch.float32).replace("torch.", "")
    result["device"] = str(device)
    result["peaks_gflops"] = measure_peaks(dtype, device)
    for size in args.sizes:
        item = load(work / "images" / f"nuclei{size}.tif")
        repeats = args.repeats_large if size >= 2048 else args.repeats
        net_s, pred = _median_times(lambda item=item: net(item), repeats)
        post_s, _ = _median_times(lambda item=item, pred=pred: post(item, pred), repeats)
        entry = {
            "repeats": repeats,
            "net_s": net_s,
            "post_s": post_s,
            "s_per_mp": s_per_mp(net_s + post_s, size, size),
            "net_s_per_mp": s_per_mp(net_s, size, size),
            "post_s_per_mp": s_per_mp(post_s, size, size),
        }
        if device.type == "cuda":
            entry["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            torch.cuda.reset_peak_memory_stats(device)
        if size <= args.flop_max_size:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                inferer(item["image"][None].to(device), network)
            entry["flops"] = int(counter.get_total_flops())
            entry["gflop_per_mp"] = entry["flops"] / 1e9 / (size * size / 1e6)
        labels = out_dir / f"nuclei{size}.tif"
        entry["objects"] = int(len(np.unique(tifffile.imread(labels))) - 1) if labels.is_file() else None
        result["sizes"][str(size)] = entry
        print(f"  {name} {size}²: {entry['s_per_mp']:.3f} s/MP (network {entry['net_s_per_mp']:.3f})", flush=True)

    if args.objects:
        result["objects"] = []
        for count in OBJECT_COUNTS:
            item = load(work / "images" / f"objects{count}.tif")
            pred = net(item)
            post_s, _ = _median_times(lambda item=item, pred=pred: post(item, pred), args.repeats)
            found = len(np.unique(tifffile.imread(out_dir / f"objects{count}.tif"))) - 1
            result["objects"].append({"drawn": count, "found": int(found), "post_s": post_s})
    if args.profile:
        size = max([s for s in args.sizes if s <= 1024] or [min(args.sizes)])
        result["profile_size"] = size
        image = load(work / "images" / f"nuclei{size}.tif")["image"][None].to(device)
        result["profile"] = _profile(inferer, network, image)
    if args.train_iterations > 0:
        try:
            result["train"] = train_throughput(name, work, args.train_iterations)
        except Exception as exc:  # reported in the table, the benchmark goes on
            result["train"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    result["torch_threads"] = torch.get_num_threads()
    return result


# --- child: one peer (runs in .venv-peers) --------------------------------------------------------------------------


def _peer_model(name: str, work: Path) -> Callable[[Any], Any]:
    """A function image (H, W) float32 → label image, with random weights."""
    import numpy as np

    if name == "cellpose":
        from cellpose import models

        model = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None, nchan=2)

        def run(image: Any) -> Any:
            masks, _, _ = model.eval(image, channels=[0, 0], diameter=30.0)
            return masks

        return run
    if name == "stardist":
        from csbdeep.utils import normalize
        from stardist.models import Config2D, StarDist2D

        config = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1)
        model = StarDist2D(config, name="random", basedir=str(work / "stardist"))
        model.thresholds = {"prob": 0.479, "nms": 0.3}  # those of the published 2D_versatile_fluo model

        def run(image: Any) -> Any:
            labels, _ = model.predict_instances(normalize(image, 1, 99.8), n_tiles=model._guess_n_tiles(image))
            return labels

        return run
    if name == "instanseg":
        import torch
        from instanseg import InstanSeg
        from instanseg.utils.loss.instanseg_loss import InstanSeg as InstanSegMethod
        from instanseg.utils.loss.instanseg_loss import InstanSeg_Torchscript
        from instanseg.utils.model_loader import build_model_from_dict

        torch.manual_seed(0)
        spec = {
            "model_str": "InstanSeg_UNet",
            "dim_in": 3,
            "layers": [32, 64, 128, 256],  # the published brightfield/fluorescence nuclei models' widths
            "norm": "BATCH",
            "multihead": False,
            "cells_and_nuclei": False,
            "dim_coords": 2,
            "n_sigma": 2,
            "dim_seeds": 1,
            "dropprob": 0.0,
        }
        model = build_model_from_dict(spec)
        model = InstanSegMethod(n_sigma=2, device="cpu").initialize_pixel_classifier(model)
        wrapped = InstanSeg_Torchscript(model, pixel_size=0.5, n_sigma=2, backbone_dim_in=3)
        method = InstanSeg(torch.jit.script(wrapped), device="cpu", verbosity=0)

        def run(image: Any) -> Any:
            rgb = np.repeat(image[None], 3, axis=0)
            labels = method.eval_small_image(rgb, pixel_size=None, return_image_tensor=False)
            return labels[0, 0].cpu().numpy()

        return run
    raise ValueError(f"unknown peer {name!r}; one of {', '.join(PEERS)}")


def peer_child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import tifffile

    work = Path(args.work)
    run = _peer_model(args.name, work)
    out = work / f"out-{args.name}"
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"peer": args.name, "sizes": {}}
    for size in args.sizes:
        path = work / "images" / f"nuclei{size}.tif"

        def step(path: Path = path) -> int:
            labels = run(tifffile.imread(path).astype(np.float32))
            tifffile.imwrite(out / path.name, np.asarray(labels).astype(np.uint32))
            return int(np.asarray(labels).max())

        repeats = args.repeats_large if size >= 2048 else args.repeats
        seconds, found = _median_times(step, repeats)
        result["sizes"][str(size)] = {"repeats": repeats, "s": seconds, "s_per_mp": s_per_mp(seconds, size, size)}
        result["sizes"][str(size)]["objects"] = found
        print(f"  {args.name} {size}²: {result['sizes'][str(size)]['s_per_mp']:.3f} s/MP", flush=True)
    return result


# --- parent ---------------------------------------------------------------------------------------------------------


def _load() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    wanted = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Flags")
    info = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in wanted:
            value = value.strip()
            if key.strip() == "Flags":  # only what matters for float32 throughput
                value = " ".join(f for f in value.split() if f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"))
            info[key.strip()] = value
    return info


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    env["TF_NUM_INTRAOP_THREADS"], env["TF_NUM_INTEROP_THREADS"] = str(threads), "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONWARNINGS"] = "ignore"
    env.pop("CELLSEG_DEBUG", None)
    return env


def _run_child(python: str, kind: str, name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from benchmarks.measure import run_with_peak_rss

    out = work / f"{kind}-{name}.json"
    cmd = [python, str(Path(__file__).resolve()), "--child", kind, name, "--work", str(work), "--child-json", str(out)]
    cmd += ["--sizes", *map(str, args.peer_sizes if kind == "peer" else args.sizes)]
    cmd += ["--repeats", str(args.repeats), "--repeats-large", str(args.repeats_large)]
    cmd += ["--memory-cap-mb", str(args.memory_cap_mb), "--device", args.device]
    if kind == "bundle":
        cmd += ["--train-iterations", str(args.train_iterations), "--flop-max-size", str(args.flop_max_size)]
        cmd += [] if args.no_objects else ["--objects"]
        cmd += [] if args.no_profile else ["--profile"]
    start = time.monotonic()
    child = run_with_peak_rss(cmd, work / f"{kind}-{name}.log", cwd=REPO, env=_child_env(args.threads))
    result = json.loads(out.read_text()) if child.returncode == 0 and out.is_file() else {}
    if child.returncode != 0:
        tail = child.log.read_text(errors="replace").strip().splitlines()[-3:]
        result["error"] = f"exit {child.returncode}: " + " | ".join(tail)[-400:]
        print(f"  {kind} {name} failed: {result['error']}", flush=True)
    result["peak_rss_mb"] = child.peak_rss_mb
    result["wall_s"] = time.monotonic() - start
    return result


def _write_images(work: Path, sizes: Sequence[int]) -> None:
    import tifffile

    (work / "images").mkdir(parents=True, exist_ok=True)
    for size in sizes:  # nuclei density of a typical fluorescence field: one per 40×40 px
        image, _ = jittered_grid_nuclei(size, max(4, (size // 40) ** 2), seed=size)
        tifffile.imwrite(work / "images" / f"nuclei{size}.tif", image)
    for count in OBJECT_COUNTS:
        image, _ = jittered_grid_nuclei(1024, count, seed=count)
        tifffile.imwrite(work / "images" / f"objects{count}.tif", image)


def _fmt(value: Any, spec: str = ".2f", scale: float = 1.0) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value * scale, spec)


def reference_size(sizes: Sequence[int], peer_sizes: Sequence[int]) -> int:
    """The size the ratios and the per-size columns refer to: 1024 when bundles and peers both ran it, else the
    largest size both ran, else the largest bundle size."""
    common = set(sizes) & set(peer_sizes)
    if 1024 in common or (not common and 1024 in sizes):
        return 1024
    return max(common) if common else max(sizes)


def _report(doc: dict[str, Any]) -> str:
    sizes = [str(s) for s in doc["args"]["sizes"]]
    ref_size = str(reference_size(doc["args"]["sizes"], doc["args"]["peer_sizes"]))
    peaks = doc["peaks_gflops"]
    lines = [
        f"# Speed on {doc['machine_name']}",
        "",
        f"Command: `{doc['command']}` — total {doc['total_s'] / 60:.1f} min.",
        "",
        f"Machine: {doc['lscpu'].get('Model name', doc['machine']['cpu'])}, {doc['lscpu'].get('CPU(s)', '?')} CPUs "
        f"({doc['lscpu'].get('Thread(s) per core', '?')} thread(s) per core; {doc['lscpu'].get('Flags', '')}), "
        f"{doc['threads']} torch/OMP thread(s) in every process; torch {doc['machine']['torch']}, "
        f"MONAI {doc['machine']['monai']}. Load average (1, 5, 15 min) before: {doc['load_before']}, after: "
        f"{doc['load_after']} — on a busy machine every figure is slower than the machine can do."
        + (f" Bundles on {doc['device']} ({doc['gpu']}); peers on the CPU." if doc.get("gpu") else ""),
        "",
        f"Measured peaks ({doc['threads']} threads): "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in peaks.items())
        + " GFLOP/s (matmul: dense 2048² `torch.mm` (4096² on a GPU); conv3x3: 64→64 channels, 4×256², channels_last in the "
        "reduced precision). "
        "Each bundle's process measures them again right before its own timings (its `peaks_gflops` in the JSON); "
        "its efficiency is taken against the largest peak of the precision it computes in (column *precision*): a "
        "bfloat16 network against the bfloat16 peaks, a float32 one against the float32 peaks.",
        "",
        "## Full inference, shipped weights",
        "",
        "s/MP = (network + post-processing incl. writing TIFF/PNG/CSV) ÷ megapixels, median after one warm-up; "
        "loading the weights and reading the image excluded. GFLOP/MP and efficiency: FlopCounterMode over the very "
        "inferer call that was timed (tiles, overlap and padding included), at the largest size counted.",
        "",
        "| bundle | "
        + " | ".join(f"s/MP {s}²" for s in sizes)
        + f" | network s/MP {ref_size}² | post s/MP {ref_size}² | objects {ref_size}² | peak RSS MB | precision | GFLOP/MP "
        "| achieved GFLOP/s "
        "| % of peak | train patches/s (batch) |",
        "|---|" + "---|" * (len(sizes) + 9),
    ]
    for b in doc["bundles"]:
        if "sizes" not in b:
            lines.append(f"| {b.get('bundle', '?')} | failed: {b.get('error', '')} |")
            continue
        ref = b["sizes"].get(ref_size, {})
        counted = [s for s in b["sizes"].values() if "flops" in s]
        eff = counted[-1] if counted else {}
        train = b.get("train", {})
        tp = (
            f"{train['patches_per_s']:.1f} ({train['batch_patches']:.0f})"
            if "patches_per_s" in train
            else train.get("error", "—")[:60]
        )
        lines.append(
            f"| {b['bundle']} | "
            + " | ".join(_fmt(b["sizes"].get(s, {}).get("s_per_mp"), ".3f") for s in sizes)
            + f" | {_fmt(ref.get('net_s_per_mp'), '.3f')} | {_fmt(ref.get('post_s_per_mp'), '.3f')} "
            f"| {ref.get('objects', '—')} | {b['peak_rss_mb']:.0f} | {b.get('precision', 'float32')} "
            f"| {_fmt(eff.get('gflop_per_mp'), '.1f')} "
            f"| {_fmt(eff.get('achieved_gflops'), '.1f')} | {_fmt(eff.get('peak_fraction'), '.1f', 100)} | {tp} |"
        )
    gpu = [b for b in doc["bundles"] if any("gpu_peak_mb" in e for e in b.get("sizes", {}).values())]
    if gpu:
        lines += ["", "GPU memory (`torch.cuda.max_memory_allocated` over the timed calls of each size), MB:", ""]
        lines += ["| bundle | " + " | ".join(f"{s}²" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for b in gpu:
            cells = [_fmt(b["sizes"].get(s, {}).get("gpu_peak_mb"), ".0f") for s in sizes]
            lines.append(f"| {b['bundle']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Peers (same images, same threads, random weights: speed only)",
        "",
        "Random weights also make their post-processing see random outputs (no objects, or tens of thousands of "
        "candidates for StarDist's NMS): their times are indicative only; with trained weights they differ.",
        "",
    ]
    peer_sizes = [str(s) for s in doc["args"]["peer_sizes"]]
    lines += [
        "| peer | " + " | ".join(f"s/MP {s}²" for s in peer_sizes) + f" | objects {ref_size}² | peak RSS MB | note |",
        "|---|" + "---|" * (len(peer_sizes) + 3),
    ]
    for p in doc["peers"]:
        note = p.get("error", p.get("note", ""))
        lines.append(
            f"| {p['peer']} | "
            + " | ".join(_fmt(p.get("sizes", {}).get(s, {}).get("s_per_mp"), ".3f") for s in peer_sizes)
            + f" | {p.get('sizes', {}).get(ref_size, {}).get('objects', '—')} | {_fmt(p.get('peak_rss_mb'), '.0f')} "
            f"| {note} |"
        )
    if doc["peers"]:
        names = [p["peer"] for p in doc["peers"]]
        lines += [
            "",
            f"Ratios at {ref_size}²: peer s/MP ÷ bundle s/MP (> 1: the bundle is faster).",
            "",
            "| bundle | " + " | ".join(f"vs {n}" for n in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for b in doc["bundles"]:
            r = peer_ratios(
                b.get("sizes", {}).get(ref_size, {}).get("s_per_mp") or 0.0,
                {p["peer"]: p.get("sizes", {}).get(ref_size, {}).get("s_per_mp") for p in doc["peers"]},
            )
            b["ratios"] = r
            lines.append(f"| {b.get('bundle')} | " + " | ".join(_fmt(r.get(n), ".2f") for n in names) + " |")
    lines += ["", "## Post-processing time vs number of objects (1024², network run once)", ""]
    counts = [str(c) for c in OBJECT_COUNTS]
    lines += [
        "| bundle | " + " | ".join(f"{c} drawn: s (found)" for c in counts) + " |",
        "|---|" + "---|" * len(counts),
    ]
    for b in doc["bundles"]:
        objs = {str(o["drawn"]): o for o in b.get("objects", [])}
        cells = [f"{objs[c]['post_s']:.3f} ({objs[c]['found']})" if c in objs else "—" for c in counts]
        lines.append(f"| {b.get('bundle')} | " + " | ".join(cells) + " |")
    lines += ["", "## Profiles (one network call, top operators by self CPU time)", ""]
    for b in doc["bundles"]:
        if b.get("profile"):
            lines.append(
                f"- **{b['bundle']}** ({b.get('profile_size', '?')}²): "
                + ", ".join(f"{e['op'].removeprefix('aten::')} {e['share'] * 100:.0f} %" for e in b["profile"][:6])
            )
            continue
            top = ", ".join(f"{e['op']} {e['share'] * 100:.0f} %" for e in b["profile"][:6])
            lines.append(f"- **{b['bundle']}**: {top}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundles", nargs="+", default=list(BUNDLES))
    p.add_argument("--peers", nargs="+", default=list(PEERS), help="'none' for no peers")
    p.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 4096])
    p.add_argument("--peer-sizes", nargs="+", type=int, default=[512, 1024])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-large", type=int, default=1, help="repeats for sizes >= 2048")
    p.add_argument("--train-iterations", type=int, default=5, help="timed training iterations (0: no training)")
    p.add_argument("--flop-max-size", type=int, default=1024, help="count FLOPs at sizes up to this")
    p.add_argument("--no-objects", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    )
    p.add_argument("--memory-cap-mb", type=float, default=12288, help="address-space cap per child (0: none)")
    p.add_argument("--device", default="cpu", help="the bundles' device: cpu, or cuda (peers stay on the CPU)")
    p.add_argument("--quick", action="store_true", help="512² and 1024², 1 repeat, 3 training iterations")
    p.add_argument("--machine", default=None, help="file name part (default: cpu<threads>)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=None, help="images, outputs and logs (default: a temp folder)")
    # internal: one child
    p.add_argument("--report-only", type=Path, default=None, help="rewrite the .md (and ratios) from a .json")
    p.add_argument("--child", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    p.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--objects", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.peer_sizes = [s for s in args.sizes if s <= 1024], [s for s in args.peer_sizes if s <= 1024]
        args.repeats, args.train_iterations = 1, min(args.train_iterations, 3)
    if args.peers == ["none"]:
        args.peers = []
    if args.device.startswith("cuda"):
        args.memory_cap_mb = 0  # CUDA reserves more address space than any cap allows; GPU memory is reported
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        kind, args.name = args.child
        args.work = str(args.work)
        if kind == "bundle" and args.memory_cap_mb > 0:  # MemoryError here, not the OOM killer on a neighbour
            import resource

            cap = int(args.memory_cap_mb * 2**20)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        result = bundle_child(args) if kind == "bundle" else peer_child(args)
        args.child_json.write_text(json.dumps(result, indent=1) + "\n")
        return 0

    if args.report_only is not None:
        doc = json.loads(args.report_only.read_text())
        args.report_only.with_suffix(".md").write_text(_report(doc))
        args.report_only.write_text(json.dumps(doc, indent=1) + "\n")
        return 0

    import torch

    from benchmarks.measure import efficiency, machine_info, measure_peaks, peaks_for
    from cellseg_monai.inferers import autocast_dtype, cpu_has_native_bfloat16

    start = time.monotonic()
    torch.set_num_threads(args.threads)
    machine_name = args.machine or (f"cpu{args.threads}" if args.device == "cpu" else "gpu")
    work = args.work or Path(tempfile.mkdtemp(prefix="cellseg-speed-"))
    if work.exists() and args.work is not None:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    print(f"work folder {work}; load {load_before}", flush=True)
    _write_images(work, sorted(set(args.sizes) | set(args.peer_sizes)))
    if args.device == "cpu":
        peaks = measure_peaks(torch.bfloat16 if cpu_has_native_bfloat16() else None)
    else:
        peaks = measure_peaks(autocast_dtype("auto", args.device), args.device)
    print("peaks: " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()) + " GFLOP/s", flush=True)

    peers: list[dict[str, Any]] = []
    peer_python = PEER_VENV / "bin" / "python"
    for name in args.peers:
        print(f"peer {name}", flush=True)
        if not peer_python.is_file():
            peers.append({"peer": name, "error": "no .venv-peers: run bash benchmarks/install_peers.sh"})
            continue
        result = {"peer": name, **_run_child(str(peer_python), "peer", name, args, work)}
        result["note"] = "random weights"
        peers.append(result)
    bundles: list[dict[str, Any]] = []
    for name in args.bundles:
        print(f"bundle {name}", flush=True)
        result = {"bundle": name, **_run_child(sys.executable, "bundle", name, args, work)}
        precision = result.get("precision", "float32")
        fitting = peaks_for(precision, result.get("peaks_gflops", {})) + peaks_for(precision, peaks)
        for entry in result.get("sizes", {}).values():
            if "flops" in entry:  # against the largest peak of the bundle's precision, measured in the child or here
                entry["achieved_gflops"], entry["peak_fraction"] = efficiency(entry["flops"], entry["net_s"], fitting)
        bundles.append(result)
    doc = {
        "command": "python benchmarks/speed.py " + " ".join(argv),
        "machine_name": machine_name,
        "machine": machine_info(),
        "lscpu": _lscpu(),
        "platform": platform.platform(),
        "threads": args.threads,
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "load_before": load_before,
        "load_after": _load(),
        "peaks_gflops": peaks,
        "args": {k: v for k, v in vars(args).items() if k in ("sizes", "peer_sizes", "repeats", "repeats_large")},
        "bundles": bundles,
        "peers": peers,
    }
    doc["total_s"] = time.monotonic() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"speed-{machine_name}.md").write_text(_report(doc))  # adds each bundle's "ratios"
    (args.out / f"speed-{machine_name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out / f'speed-{machine_name}.md'}; total {doc['total_s'] / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
