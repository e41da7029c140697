"""Large and thin images through ``cellseg-monai segment`` (issue 13 point 5, issue 16 point 4): peak memory and time.

    python benchmarks/large_image.py                          # every bundle with shipped weights, 6000×6000
    python benchmarks/large_image.py --bundles lacss --size 3000

For each bundle, one child process (its own peak RSS, ``ru_maxrss``, is the figure; goal ≤ 4 GB) runs the real
command-line code path, :func:`cellseg_monai.cli.main` ``["segment", IMAGE, "--bundle", NAME, ...]`` with the shipped
weights, on, in this order:

1. a 64×64 image — the fixed cost of one ``segment`` call (config parsing, loading the weights, writing three files);
2. the ``--size``² image (synthetic nuclei, uint16) — seconds per megapixel = (its time − the fixed cost) / MP;
3. a 1×2000 image and a 45×45 image (2025 px) — time per pixel above the fixed cost, compared with the large
   image's: a thin image should cost no more per pixel than a square one.

Writes ``<out>/large-image-<machine>.md`` and ``.json`` with the command, the machine (``lscpu`` model, threads)
and the load average. Each child runs under an address-space cap (``--memory-cap-mb``, default 10 GB): a bundle
that needs more fails with ``MemoryError`` in its own process instead of waking the kernel's OOM killer on a shared
machine; the table then says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

__all__ = ["GOAL_MB", "main"]

GOAL_MB = 4096.0
"""Peak resident memory goal for a 6000×6000 image (issue 13 point 5)."""


def _images(work: Path, size: int) -> dict[str, Path]:
    import numpy as np
    import tifffile

    from benchmarks.speed import jittered_grid_nuclei

    rng = np.random.default_rng(0)
    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    tile, _ = jittered_grid_nuclei(1000, 625, seed=1)  # one nucleus per 40×40 px, tiled to the full size
    reps = -(-size // 1000)
    large = (np.tile(tile, (reps, reps))[:size, :size] * 60000).astype(np.uint16)
    paths = {
        "fixed": (rng.random((64, 64)) * 60000).astype(np.uint16),
        "large": large,
        "row": (rng.random((1, 2000)) * 60000).astype(np.uint16),
        "square": (rng.random((45, 45)) * 60000).astype(np.uint16),
    }
    out = {}
    for name, array in paths.items():
        out[name] = folder / f"{name}.tif"
        if not out[name].is_file():
            tifffile.imwrite(out[name], array)
    return out


def child(name: str, work: Path, size: int) -> dict[str, Any]:
    """Run the four ``segment`` calls of the module docstring in this process; their wall times."""
    from cellseg_monai.cli import main as cli

    images = _images(work, size)
    times: dict[str, float] = {}
    for key in ("fixed", "large", "row", "square"):
        out = work / f"out-{name}-{key}"
        start = time.perf_counter()
        try:
            cli(["segment", str(images[key]), "--bundle", name, "--output_dir", str(out), "--overwrite", "True"])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"segment {images[key]} --bundle {name}: exit {exc.code}") from None
        times[key] = time.perf_counter() - start
        print(f"  {name} {key}: {times[key]:.1f} s", flush=True)
    return times


def _row(name: str, times: dict[str, float], peak_mb: float, size: int) -> dict[str, Any]:
    fixed = times["fixed"]
    mp = size * size / 1e6
    large_s = max(times["large"] - fixed, 0.0)
    per_px = {k: max(times[k] - fixed, 0.0) / n * 1e6 for k, n in (("row", 2000), ("square", 2025))}
    return {
        "bundle": name,
        "fixed_s": fixed,
        "large_s": times["large"],
        "s_per_mp": large_s / mp,
        "peak_rss_mb": peak_mb,
        "within_goal": peak_mb <= GOAL_MB,
        "us_per_px_large": large_s / (size * size) * 1e6,
        "us_per_px_row_1x2000": per_px["row"],
        "us_per_px_square_45x45": per_px["square"],
    }


def _report(doc: dict[str, Any]) -> str:
    size = doc["size"]
    lines = [
        f"# Large and thin images on {doc['machine_name']}",
        "",
        f"Command: `{doc['command']}` — total {doc['total_s'] / 60:.1f} min.",
        "",
        f"Machine: {doc['cpu']}, {doc['cpus']} CPUs, {doc['threads']} torch/OMP thread(s); load average before "
        f"{doc['load_before']}, after {doc['load_after']} (a busy machine makes every time longer; memory is not "
        "affected).",
        "",
        f"Each bundle: `cellseg-monai segment` code path in one child process, shipped weights; peak RSS of that "
        f"process (goal ≤ {GOAL_MB:.0f} MB at {size}×{size}); s/MP = (time of the {size}² call − time of a 64² "
        "call) / MP; µs/px of a 1×2000 and a 45×45 image above the same fixed cost, vs the large image's.",
        "",
        f"| bundle | peak RSS MB | ≤ 4 GB | {size}² s | s/MP | fixed s (64²) | µs/px {size}² | µs/px 1×2000 "
        "| µs/px 45×45 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["bundles"]:
        if "error" in r:
            lines.append(f"| {r['bundle']} | {r.get('peak_rss_mb', 0):.0f} | — | failed: {r['error'][:200]} |||||")
            continue
        lines.append(
            f"| {r['bundle']} | {r['peak_rss_mb']:.0f} | {'yes' if r['within_goal'] else '**no**'} "
            f"| {r['large_s']:.1f} | {r['s_per_mp']:.2f} | {r['fixed_s']:.1f} | {r['us_per_px_large']:.2f} "
            f"| {r['us_per_px_row_1x2000']:.1f} | {r['us_per_px_square_45x45']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundles", nargs="+", default=None, help="default: every bundle with models/model.pt")
    p.add_argument("--size", type=int, default=6000)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--machine", default=None)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument(
        "--memory-cap-mb",
        type=float,
        default=10240,
        help="address-space cap of each child (RLIMIT_AS; torch alone reserves ~3 GB of it); 0: none",
    )
    p.add_argument("--merge", action="store_true", help="keep the other bundles' rows of an earlier result file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-json", type=Path, default=None, help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="cellseg-large-"))
    if args.child:
        if args.memory_cap_mb > 0:  # fail this child with MemoryError rather than let the kernel kill a neighbour
            import resource

            cap = int(args.memory_cap_mb * 2**20)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        args.child_json.write_text(json.dumps(child(args.child, work, args.size)))
        return 0

    from benchmarks.measure import run_with_peak_rss
    from benchmarks.speed import BUNDLES, _child_env, _load

    start = time.monotonic()
    names = args.bundles or [b for b in BUNDLES if (REPO / "bundles" / b / "models" / "model.pt").is_file()]
    work.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    _images(work, args.size)  # once, outside the children's memory
    rows = []
    for name in names:
        print(f"bundle {name}", flush=True)
        out = work / f"{name}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--work", str(work)]
        cmd += ["--size", str(args.size), "--child-json", str(out), "--memory-cap-mb", str(args.memory_cap_mb)]
        run = run_with_peak_rss(cmd, work / f"{name}.log", cwd=REPO, env=_child_env(args.threads))
        if run.returncode == 0 and out.is_file():
            rows.append(_row(name, json.loads(out.read_text()), run.peak_rss_mb, args.size))
        else:
            tail = " | ".join(run.log.read_text(errors="replace").strip().splitlines()[-3:])
            rows.append({"bundle": name, "peak_rss_mb": run.peak_rss_mb, "error": f"exit {run.returncode}: {tail}"})
        print(f"  peak RSS {run.peak_rss_mb:.0f} MB", flush=True)
        _write(args, argv, rows, load_before, start)  # after every bundle: a long run interrupted keeps its rows
    return 0


def _write(args: argparse.Namespace, argv: Sequence[str], rows: list[dict[str, Any]], load_before: Any, start: float):
    from benchmarks.measure import cpu_model
    from benchmarks.speed import _load, _lscpu

    stem = args.out / f"large-image-{args.machine or f'cpu{args.threads}'}"
    if args.merge and stem.with_suffix(".json").is_file():  # keep the rows of bundles this run did not measure
        done = {r["bundle"] for r in rows}
        earlier = json.loads(stem.with_suffix(".json").read_text())["bundles"]
        rows = [r for r in earlier if r["bundle"] not in done] + rows
    lscpu = _lscpu()
    doc = {
        "command": "python benchmarks/large_image.py " + " ".join(argv),
        "machine_name": args.machine or f"cpu{args.threads}",
        "cpu": lscpu.get("Model name", cpu_model()),
        "cpus": lscpu.get("CPU(s)", "?"),
        "threads": args.threads,
        "size": args.size,
        "load_before": load_before,
        "load_after": _load(),
        "bundles": rows,
    }
    doc["total_s"] = time.monotonic() - start
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    stem.with_suffix(".md").write_text(_report(doc))
    print(f"wrote {stem}.md; total {doc['total_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    sys.exit(main())
