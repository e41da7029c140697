"""Training speed of every bundle in float32 and in bfloat16 autocast (``train_precision``), one command.

    python benchmarks/train_precision.py --machine cpu2-epyc          # all bundles, 1 thread each (as ship.py trains)
    python benchmarks/train_precision.py --bundles lacss --iterations 5

Each bundle's own ``train.json`` trainer runs on the embedded sample data (default batch, validation off) in a child
process of its own per precision, with ``--threads`` torch/OMP threads (default 1: the benchmark trainings run one
thread each, two at a time); seconds per iteration are the median over ``--iterations`` after two warm-up
iterations (:func:`benchmarks.speed.train_throughput`). ``bfloat16`` is what ``train_precision: "auto"`` picks on a
CPU with native bfloat16 (AVX512-BF16 or AMX) and on a CUDA GPU that computes it; elsewhere ``auto`` trains in
float32, and forcing bfloat16 on a CPU without it is slower (emulated).

Writes ``<out>/train-precision-<machine>.md`` and ``.json``. The speed-up says how many more iterations a training of
the same minutes reaches; whether the weights are as good is measured by training them
(``benchmarks/ship.py``, the bundles' docs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.speed import BUNDLES, _load  # noqa: E402

__all__ = ["PRECISIONS", "main", "markdown", "speedup"]


PRECISIONS = ("float32", "bfloat16")


def speedup(row: dict[str, Any]) -> float | None:
    """float32 seconds per iteration ÷ bfloat16 seconds per iteration (> 1: bfloat16 trains faster)."""
    fp32, bf16 = row.get("float32", {}).get("s_per_iteration"), row.get("bfloat16", {}).get("s_per_iteration")
    return fp32 / bf16 if fp32 and bf16 else None


def _cell(run: dict[str, Any]) -> str:
    return f"{run['s_per_iteration']:.3f}" if "s_per_iteration" in run else str(run.get("error", "—"))


def markdown(record: dict[str, Any]) -> str:
    lines = [
        f"# Training precision on {record['machine_name']}",
        "",
        f"Command: `{record['command']}` — total {record['total_minutes']:.1f} min.",
        "",
        f"Machine: {record['machine']['cpu']}, {record['machine']['cores']} CPUs, native bfloat16: "
        f"{record['native_bfloat16']}; {record['threads']} torch/OMP thread(s) per process; torch "
        f"{record['machine']['torch']}. Load average before: {record['load_before']}, after: {record['load_after']}.",
        "",
        "Median seconds per iteration of each bundle's `train.json` trainer (embedded sample, default batch, "
        f"{record['iterations']} iterations after two warm-up ones); *default*: the bundle's `train_precision`.",
        "",
        "| bundle | batch (patches) | float32 s/it | bfloat16 s/it | speed-up | default |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in record["bundles"].items():
        fp32, bf16 = row.get("float32", {}), row.get("bfloat16", {})
        ratio, batch = speedup(row), fp32.get("batch_patches", bf16.get("batch_patches"))
        lines.append(
            f"| {name} | {'—' if batch is None else f'{batch:g}'} | {_cell(fp32)} | {_cell(bf16)} | "
            f"{f'{ratio:.2f}×' if ratio else '—'} | {row['default']} |"
        )
    return "\n".join(lines) + "\n"


def _child(name: str, precision: str, iterations: int, work: Path) -> None:
    import torch

    from benchmarks.speed import train_throughput

    torch.manual_seed(0)
    result = train_throughput(name, work, iterations, {"train_precision": precision})
    print("RESULT " + json.dumps(result))


def _error_line(text: str) -> str:
    """The exception line of a child's output (the last line naming an error), else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return (errors or lines or ["no output"])[-1][:160]


def _run_child(name: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory(dir=args.work, prefix=f"{name}-{precision}-") as work:  # a fresh run folder
        cmd = [sys.executable, __file__, "--child", name, precision, "--iterations", str(args.iterations)]
        cmd += ["--work", work]
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {args.timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"error": f"failed: {_error_line(proc.stderr or proc.stdout)}"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundles", nargs="+", default=list(BUNDLES), choices=BUNDLES)
    p.add_argument("--iterations", type=int, default=8, help="timed iterations per run (after two warm-up ones)")
    p.add_argument("--threads", type=int, default=1, help="torch/OMP threads of each child process")
    p.add_argument("--machine", default="cpu2", help="machine name in the result file names")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "train-precision", help="parent of the run folders")
    p.add_argument("--timeout", type=int, default=900, help="seconds one child may run")
    p.add_argument("--child", nargs=2, metavar=("BUNDLE", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1], args.iterations, args.work)
        return 0

    import torch

    from benchmarks.measure import machine_info
    from cellseg_monai.inferers.precision import cpu_has_native_bfloat16

    torch.set_num_threads(args.threads)  # the machine record names the children's thread count
    args.work.mkdir(parents=True, exist_ok=True)
    start, load_before = time.perf_counter(), _load()
    rows: dict[str, Any] = {}
    for name in args.bundles:
        train = json.loads((REPO / "bundles" / name / "configs" / "train.json").read_text())
        rows[name] = {"default": train.get("train_precision", "float32")}
        for precision in PRECISIONS:
            rows[name][precision] = _run_child(name, precision, args)
            print(name, precision, rows[name][precision], flush=True)
    record = {
        "command": "python benchmarks/train_precision.py " + " ".join(argv),
        "machine_name": args.machine,
        "machine": machine_info(),
        "native_bfloat16": cpu_has_native_bfloat16(),
        "threads": args.threads,
        "iterations": args.iterations,
        "load_before": load_before,
        "load_after": _load(),
        "total_minutes": (time.perf_counter() - start) / 60,
        "bundles": rows,
    }
    for row in rows.values():
        row["speedup"] = speedup(row)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"train-precision-{args.machine}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(record))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
