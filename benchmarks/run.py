"""Benchmark every bundle and baseline on one dataset: accuracy, annotation-budget curve, speed, size, memory.

    python benchmarks/run.py --data ../shared/data/bbbc038 --budgets 0.05 0.1 0.25 0.5 1.0 --minutes 10
    python benchmarks/run.py --tiny            # CI: embedded sample data, one budget, one short epoch

Methods:

- every bundle under ``bundles/`` (a real folder with ``configs/train.json``; ``--bundles`` selects). A bundle
  whose ``train.json`` has the id ``annotation_budget`` is *weak*: trained once per budget (``--annotation_budget``
  = fraction of each image's objects that get a simulated weak annotation). A bundle without it is a
  *full-supervision reference* (trained once on full labels).
- the classic baseline: Otsu threshold + distance-transform watershed, no training.

Per bundle run: ``configs/train.json`` trains on the ``train`` split for ``--minutes`` of wall clock (or
``--epochs``), with validation switched off (``val`` stays unseen); ``train.json + evaluate.json`` predicts the
``val`` split from the last ``checkpoint_epoch=N.pt``; :func:`cellseg_monai.metrics.folder.evaluate_folders`
scores those predictions (per-image mean and pooled). The classic baseline's predictions go through the same
scoring. Speed is measured by ``benchmarks/infer.py`` in a child process; the machine's matmul peak by
:func:`benchmarks.measure.matmul_gflops`. ``benchmarks/report.py`` writes
``<out>/<dataset>-<machine>.md``, ``.json`` and ``-budget.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.infer import parse_override, select_overrides  # noqa: E402
from benchmarks.measure import (  # noqa: E402
    efficiency,
    machine_info,
    matmul_gflops,
    measure_peaks,
    peaks_for,
    run_with_peak_rss,
)
from benchmarks.report import write_report  # noqa: E402
from cellseg_monai.bundle.paths import bundles_dir  # noqa: E402
from cellseg_monai.inferers import autocast_dtype  # noqa: E402

__all__ = [
    "one_bundle",
    "DEFAULT_BUDGETS",
    "TINY_OVERRIDES",
    "Bundle",
    "BenchmarkError",
    "discover_bundles",
    "applicable_overrides",
    "train_bundle",
    "evaluate_bundle",
    "measure_inference",
    "run_bundle",
    "run_classic",
    "write_val_labels",
    "main",
]

BUNDLES_DIR = bundles_dir()  # the bundles that come with the package (cellseg_monai.bundle.paths)
DEFAULT_BUDGETS = [0.05, 0.1, 0.25, 0.5, 1.0]
TINY_OVERRIDES = ["network_def#features=8", "num_samples=2", "supervised_unet:network_def#features=[8,8,16,16,32,8]"]
NO_VALIDATION = "100000000"


class BenchmarkError(RuntimeError):
    """One method failed (a child process exited with an error, or wrote no checkpoint); the message names the log."""


@dataclass(frozen=True)
class Bundle:
    """A bundle folder and whether it learns from weak labels (its ``train.json`` has ``annotation_budget``)."""

    name: str
    path: Path
    weak: bool

    def config(self, name: str) -> Path:
        return self.path / "configs" / name


def discover_bundles(selected: list[str] | None = None, root: Path = BUNDLES_DIR) -> tuple[list[Bundle], list[str]]:
    """The bundles under ``root`` (real folders with ``configs/train.json``; symlinked aliases are skipped); ``root``
    defaults to the package's bundles (:func:`cellseg_monai.bundle.paths.bundles_dir`).

    Args:
        selected: names to keep (in this order); ``None`` keeps every bundle, sorted by name.

    Returns:
        ``(bundles, missing)``: the bundles found and the selected names that are not there.
    """
    found: dict[str, Bundle] = {}
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.is_symlink() or not (d / "configs" / "train.json").is_file():
            continue
        train = json.loads((d / "configs" / "train.json").read_text())
        found[d.name] = Bundle(d.name, d, "annotation_budget" in train)
    if selected is None:
        return list(found.values()), []
    return [found[n] for n in selected if n in found], [n for n in selected if n not in found]


def one_bundle(name: str) -> Bundle:
    """The bundle ``name`` (:func:`discover_bundles`); a missing one ends the command with exit code 2 and a line
    naming it."""
    bundles, missing = discover_bundles([name])
    if missing:
        print(f"error: no bundle {name!r} under {BUNDLES_DIR}", file=sys.stderr)
        raise SystemExit(2)
    return bundles[0]


def applicable_overrides(overrides: list[str], bundle: str, config_files: list[Path]) -> list[str]:
    """The overrides that apply to ``bundle`` (:func:`benchmarks.infer.select_overrides` on the merged
    ``config_files``), as ``--KEY VALUE`` arguments of ``monai.bundle run``; skipped ones are printed."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    chosen, notes = select_overrides(overrides, parser, bundle)
    for note in notes:
        print(note, flush=True)
    return [
        a for key, value in chosen.items() for a in (f"--{key}", repr(value) if not isinstance(value, str) else value)
    ]


def _bundle_cmd(bundle: Bundle, configs: list[str], args: list[str]) -> list[str]:
    files = [str(bundle.config(c)) for c in configs]
    config_arg = files[0] if len(files) == 1 else str(files)
    root = ["--bundle_root", str(bundle.path)]  # explicit: the run never depends on the working directory
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, *root, *args]


def _run(cmd: list[str], log: Path) -> Any:
    child = run_with_peak_rss(cmd, log, cwd=REPO)
    if child.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise BenchmarkError(f"exit {child.returncode}: {shlex.join(cmd)}\nlast lines of {log}:\n{tail}")
    return child


def _trainer_iterations(ckpt: str, epochs: int, epoch_length: int) -> int:
    """Iterations run, from the trainer state in the training checkpoint (else epochs × epoch_length)."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        return int(state["trainer"]["iteration"])
    except Exception:  # a checkpoint without trainer state: fall back to the epoch count
        return epochs * epoch_length


def train_bundle(
    bundle: Bundle,
    data: Path,
    work: Path,
    budget: float | None,
    minutes: float,
    max_epochs: int,
    epoch_length: int,
    overrides: list[str],
    reuse: bool = False,
) -> dict[str, Any]:
    """Train ``bundle`` in a child process; returns ``{"seconds", "iterations", "epochs", "peak_rss_mb",
    "checkpoint", "log"}`` (also stored as ``work/train_record.json``, which ``reuse`` reads instead of training)."""
    from cellseg_monai.handlers.checkpoint import latest_checkpoint

    record_path = work / "train_record.json"
    if reuse and record_path.is_file():
        record = json.loads(record_path.read_text())
        if Path(record["checkpoint"]).is_file():
            return record
    args = [
        "--dataset_dir", str(data),
        "--output_dir", str(work / "train"),
        "--ckpt_dir", str(work / "models"),
        "--max_train_minutes", f"{minutes:g}",
        "--train#trainer#max_epochs", str(max_epochs),
        "--train#trainer#epoch_length", str(epoch_length),
        "--val_interval", NO_VALIDATION,
    ]  # fmt: skip
    if budget is not None:
        args += ["--annotation_budget", repr(float(budget))]  # "1.0", not "1": an int budget counts objects
    args += applicable_overrides(overrides, bundle.name, [bundle.config("train.json")])
    child = _run(_bundle_cmd(bundle, ["train.json"], args), work / "train.log")
    ckpt = latest_checkpoint(work / "train")
    if not ckpt:
        raise BenchmarkError(f"{bundle.name}: training wrote no checkpoint_*.pt in {work / 'train'}; see {child.log}")
    match = re.search(r"=(\d+)\.pt$", ckpt)
    epochs = int(match.group(1)) if match else 0
    record = {
        "seconds": child.seconds,
        "iterations": _trainer_iterations(ckpt, epochs, epoch_length),
        "epochs": epochs,
        "peak_rss_mb": child.peak_rss_mb,
        "checkpoint": ckpt,
        "log": str(child.log),
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def _read_metrics_csv(path: Path) -> dict[str, float]:
    """``name,value`` lines of a bundle's ``metrics.csv`` (MONAI ``MetricsSaver``) as a dict of floats."""
    out: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, sep, value = line.rpartition(",")
            if sep:
                try:
                    out[name.strip()] = float(value)
                except ValueError:
                    continue
    return out


def evaluate_bundle(
    bundle: Bundle, data: Path, work: Path, ckpt: str, gt_dir: Path, overrides: list[str], reuse: bool = False
) -> dict[str, Any]:
    """Predict the ``val`` split with ``train.json + evaluate.json`` and score it with ``evaluate_folders``.

    With ``reuse``, predictions already made from the same checkpoint, configs and overrides
    (``work/eval_record.json``) are scored again instead of being predicted again."""
    from cellseg_monai.metrics.folder import evaluate_folders

    record_path = work / "eval_record.json"
    record = json.loads(record_path.read_text()) if reuse and record_path.is_file() else None
    configs = {c: hashlib.md5(bundle.config(c).read_bytes()).hexdigest() for c in ("train.json", "evaluate.json")}
    made_with = {"checkpoint": ckpt, "configs": configs, "overrides": list(overrides)}
    if record is None or any(record.get(k) != v for k, v in made_with.items()):  # predict again after a config edit
        args = ["--dataset_dir", str(data), "--ckpt_path", ckpt, "--eval_dir", str(work / "eval")]
        args += ["--eval_split", "val"]
        args += applicable_overrides(
            overrides, bundle.name, [bundle.config("train.json"), bundle.config("evaluate.json")]
        )
        child = _run(_bundle_cmd(bundle, ["train.json", "evaluate.json"], args), work / "eval.log")
        record = {**made_with, "seconds": child.seconds}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    scores = evaluate_folders(work / "eval" / "predictions", gt_dir, json_path=work / "eval" / "instance_metrics.json")
    return {
        "eval_seconds": record["seconds"],
        "per_image_mean": scores["per_image_mean"],
        "pooled": scores["pooled"],
        "missing": scores["missing"],
        "bundle_metrics": _read_metrics_csv(work / "eval" / "metrics.csv"),
    }


def measure_inference(cmd_args: list[str], work: Path, reuse: bool = False) -> dict[str, Any]:
    """Run ``benchmarks/infer.py cmd_args`` as a child; its JSON plus the child's ``peak_rss_mb``.

    The result is also stored as ``work/infer_record.json`` with the arguments; ``reuse`` returns a record made
    with the same arguments instead of measuring again."""
    record_path = work / "infer_record.json"
    if reuse and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("args") == cmd_args:
            return record["inference"]
    json_path = work / "infer.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "infer.py"), *cmd_args, "--json", str(json_path)]
    child = _run(cmd, work / "infer.log")
    inference = {**json.loads(json_path.read_text()), "peak_rss_mb": child.peak_rss_mb}
    record_path.write_text(json.dumps({"args": cmd_args, "inference": inference}, indent=2) + "\n")
    return inference


def classic_pixel_metrics(pred_dir: Path, gt_dir: Path) -> dict[str, float]:
    """Pixel F1 and ROC AUC of the classic baseline's foreground (its labels > 0, a 0/1 score), mean over images,
    named like the bundles' own ``metrics.csv`` values."""
    import numpy as np

    from cellseg_monai.data import read_labels
    from cellseg_monai.metrics.pixel import pixel_f1, roc_auc

    f1s, aucs = [], []
    for gt_path in sorted(gt_dir.glob("*.tif")):
        gt = read_labels(gt_path)
        fg = (read_labels(pred_dir / gt_path.name) > 0).astype(np.float32)
        f1s.append(pixel_f1(fg, gt))
        aucs.append(roc_auc(fg, gt))
    return {"val_pixel_f1": float(np.nanmean(f1s)), "val_pixel_auc": float(np.nanmean(aucs))}


def run_classic(data: Path, work: Path, gt_dir: Path, warmup: int, reuse: bool = False) -> dict[str, Any]:
    """Classic Otsu + watershed baseline: predictions and timing by ``infer.py classic``, scored like the bundles."""
    from cellseg_monai.metrics.folder import evaluate_folders

    pred_dir = work / "predictions"
    args = ["classic", "--data", str(data), "--split", "val", "--out-dir", str(pred_dir), "--warmup", str(warmup)]
    inference = measure_inference(args, work, reuse and pred_dir.is_dir())
    scores = evaluate_folders(pred_dir, gt_dir, json_path=work / "instance_metrics.json")
    return {
        "method": "classic",
        "kind": "classic",
        "budget": None,
        "train": None,
        "eval_seconds": None,
        "per_image_mean": scores["per_image_mean"],
        "pooled": scores["pooled"],
        "missing": scores["missing"],
        "bundle_metrics": classic_pixel_metrics(pred_dir, gt_dir),
        "inference": inference,
    }


def run_bundle(bundle: Bundle, budget: float | None, args: argparse.Namespace, work: Path, gt_dir: Path) -> dict:
    """Train, evaluate and time one bundle at one budget (``None``: a full-supervision bundle)."""
    train = train_bundle(
        bundle, args.data, work, budget, args.minutes, args.max_epochs, args.epoch_length, args.override, args.reuse
    )
    scores = evaluate_bundle(bundle, args.data, work, train["checkpoint"], gt_dir, args.override, args.reuse)
    infer_args = ["bundle", "--bundle", str(bundle.path), "--ckpt", train["checkpoint"], "--data", str(args.data)]
    infer_args += ["--split", "val", "--out-dir", str(work / "infer"), "--warmup", str(args.warmup)]
    infer_args += [f"--override={o}" for o in args.override]
    inference = measure_inference(infer_args, work, args.reuse)
    return {
        "method": bundle.name,
        "kind": "weak" if bundle.weak else "full",
        "budget": budget,
        "train": train,
        **scores,
        "inference": inference,
    }


def write_val_labels(data: Path, gt_dir: Path) -> list[str]:
    """Copy the ``val`` split's labels (any readable layout) to ``gt_dir/<id>.tif``: the one GT every method is scored
    against. Returns the ids."""
    from cellseg_monai.data import load_datalist, read_labels, write_labels

    gt_dir.mkdir(parents=True, exist_ok=True)
    ids = []
    for item in load_datalist(data, "val"):
        write_labels(gt_dir / f"{item['id']}.tif", read_labels(item["label"]))
        ids.append(item["id"])
    return ids


def _add_roofline(results: list[dict[str, Any]], peaks: dict[str, dict[str, float]]) -> None:
    """Achieved inference GFLOP/s (executed FLOPs per MP ÷ network s per MP) and its fraction of the larger peak
    (dense matmul, 3×3 convolution) of the precision the network computes in (``benchmarks.measure.peaks_for``):
    a bfloat16 network against the bfloat16 peaks. A result without its precision (older JSON) gets no fraction."""
    for r in results:
        inf = r.get("inference")
        if not inf:
            continue
        device = "cuda" if str(inf.get("device", "cpu")).startswith("cuda") else "cpu"
        net, flops = inf.get("net_s_per_mp") or 0.0, inf.get("inferer_gflop_per_mp") or 0.0
        fitting = peaks_for(inf["precision"], peaks.get(device, {})) if "precision" in inf else []
        inf["achieved_gflops"] = flops / net if net > 0 and flops > 0 else None  # None: no network (classic)
        inf["peak_gflops"] = max(fitting) if fitting else None
        inf["peak_fraction"] = None
        if inf["achieved_gflops"] is not None and fitting:
            inf["peak_fraction"] = efficiency(flops * 1e9, net, fitting)[1]


def _default_machine() -> str:
    if torch.cuda.is_available():
        return "gpu-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
    info = machine_info()
    return f"cpu{info['cores']}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", type=Path, help="dataset folder (standard, DSB2018 or Cellpose layout; --tiny: the embedded sample)"
    )
    p.add_argument("--budgets", type=float, nargs="+", help=f"annotation budgets (default {DEFAULT_BUDGETS})")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget per run")
    p.add_argument("--epochs", type=int, help="train this many epochs instead of a wall-clock budget")
    p.add_argument("--epoch-length", type=int, default=25, help="iterations per epoch (time-limit granularity)")
    p.add_argument("--bundles", nargs="+", help="bundle names (default: every bundle under bundles/)")
    p.add_argument("--no-classic", action="store_true", help="skip the classic baseline")
    p.add_argument("--override", action="append", default=None, metavar="KEY=VALUE",
                   help="config override for every bundle run whose config has KEY with a value of the same kind; "
                   "BUNDLE:KEY=VALUE for one bundle (repeatable)")  # fmt: skip
    p.add_argument("--machine", help="machine name in the result file names (default cpu<cores> / gpu-<name>)")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results; --tiny: a temp folder)")
    p.add_argument("--work", type=Path, help="training runs and predictions (default runs/benchmarks/<name>)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up images before timing inference")
    p.add_argument("--matmul-n", type=int, default=2048, help="matrix side of the matmul peak measurement")
    p.add_argument("--reuse", action="store_true", help="reuse finished training runs in --work")
    p.add_argument("--tiny", action="store_true", help="CI: sample data, one budget, 1 short epoch, small nets")
    args = p.parse_args(argv)
    if args.tiny:
        from cellseg_monai.data import sample_data_dir

        args.data = args.data or Path(sample_data_dir())
        args.budgets = args.budgets[:1] if args.budgets else [0.5]
        args.epochs, args.epoch_length, args.matmul_n = args.epochs or 1, 2, min(args.matmul_n, 512)
        args.override = TINY_OVERRIDES if args.override is None else args.override
        args.out = args.out or Path(tempfile.mkdtemp(prefix="cellseg-bench-"))
    if args.data is None:
        p.error("--data is required (or --tiny)")
    args.budgets = args.budgets or DEFAULT_BUDGETS
    if any(not 0 < b <= 1 for b in args.budgets):
        p.error(f"budgets are fractions in (0, 1], got {args.budgets}")
    args.override = args.override or []
    for text in args.override:
        try:
            parse_override(text)
        except ValueError as e:
            p.error(str(e))
    args.max_epochs, args.minutes = (args.epochs, 0.0) if args.epochs else (100000, args.minutes)
    args.machine = args.machine or _default_machine()
    args.out = args.out or REPO / "benchmarks" / "results"
    args.dataset = args.data.resolve().name
    args.work = args.work or (
        args.out / "work" if args.tiny else REPO / "runs" / "benchmarks" / f"{args.dataset}-{args.machine}"
    )
    if not args.data.is_dir():
        p.error(f"{args.data}: no such dataset folder")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    bundles, missing = discover_bundles(args.bundles)
    for name in missing:
        print(f"skipping bundle {name!r}: not found under {BUNDLES_DIR}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    gt_dir = args.work / "gt_val"
    val_ids = write_val_labels(args.data, gt_dir)

    matmul = {"cpu": matmul_gflops(args.matmul_n, device="cpu")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # for context: one core, free of thread contention
    one_thread = matmul_gflops(args.matmul_n, device="cpu")
    torch.set_num_threads(threads)
    # the peaks each network's efficiency is taken against: float32 and the precision FastInferer computes in
    peaks = {"cpu": measure_peaks(autocast_dtype("auto", "cpu"), "cpu")}
    if torch.cuda.is_available():
        matmul["cuda"] = matmul_gflops(max(args.matmul_n, 4096), device="cuda")
        peaks["cuda"] = measure_peaks(autocast_dtype("auto", "cuda"), "cuda")
    print(f"matmul peak: {', '.join(f'{k} {v:.1f} GFLOP/s' for k, v in matmul.items())}", flush=True)

    plan: list[tuple[str, Bundle | None, float | None]] = [] if args.no_classic else [("classic", None, None)]
    for b in bundles:
        plan += [(f"{b.name} budget {x:g}", b, x) for x in args.budgets] if b.weak else [(b.name, b, None)]
    results: list[dict[str, Any]] = []
    for label, bundle, budget in plan:
        print(f"== {label}", flush=True)
        try:
            if bundle is None:
                results.append(run_classic(args.data, args.work / "classic", gt_dir, args.warmup, args.reuse))
            else:
                work = args.work / bundle.name / (f"budget_{budget:g}" if budget is not None else "full")
                results.append(run_bundle(bundle, budget, args, work, gt_dir))
        except (BenchmarkError, OSError, ValueError) as e:
            print(f"!! {label} failed: {e}", flush=True)
            kind = "classic" if bundle is None else ("weak" if bundle.weak else "full")
            results.append(
                {"method": bundle.name if bundle else "classic", "kind": kind, "budget": budget, "error": str(e)}
            )
    _add_roofline(results, peaks)

    doc = {
        "command": "python benchmarks/run.py " + shlex.join(argv),
        "dataset": args.dataset,
        "data_dir": str(args.data),
        "split": "val",
        "val_images": len(val_ids),
        "machine_name": args.machine,
        "machine": machine_info(),
        "matmul": {"n": args.matmul_n, "dtype": "float32", "gflops": matmul, "cpu_1_thread_gflops": one_thread},
        "peaks_gflops": peaks,
        "settings": {
            "budgets": args.budgets,
            "minutes": args.minutes,
            "max_epochs": args.max_epochs,
            "epoch_length": args.epoch_length,
            "overrides": args.override,
            "warmup": args.warmup,
            "tiny": args.tiny,
            "bundles": [b.name for b in bundles],
            "skipped_bundles": missing,
        },
        "results": results,
    }
    paths = write_report(doc, args.out)
    for p in paths:
        print(f"wrote {p}", flush=True)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
