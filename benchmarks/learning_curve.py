"""Learning curve of one training run: ``val`` F1@0.5 of each checkpoint it kept, against its training minutes.

    OMP_NUM_THREADS=1 python benchmarks/ship.py lacss --minutes 85 --no-install --work runs/ship/lacss-85 \\
        --set 'train#handlers#5#interval=22' --set 'train#handlers#5#n_saved=100'      # keep a checkpoint every 22 epochs
    OMP_NUM_THREADS=1 python benchmarks/learning_curve.py lacss runs/ship/lacss-85 --jobs 2

Each ``checkpoint_epoch=N.pt`` under ``RUN/train`` is scored like the shipped weights (``train.json +
evaluate.json`` on the ``val`` split of ``--data``, :func:`cellseg_monai.metrics.folder.evaluate_folders`, mean over
images; ``--set`` as in ``ship.py``). A checkpoint's minutes are the training time its learning-rate schedule
recorded (:class:`cellseg_monai.optimizers.BudgetOneCycleLR`); without that schedule, the time of the epoch's
"Complete" line in ``RUN/train.log`` after its first line. The curve is one run's: a run of a shorter budget
decays its learning rate sooner, so the point at 15 minutes of an 85-minute run is not a 15-minute run.

Writes ``benchmarks/results/learning-curve/<name>.md``, ``.json`` and ``.png`` (``--name``: default the run folder's
name). Predictions go to ``RUN/curve/epoch=N`` and are reused by a second call with the same settings.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.measure import machine_info  # noqa: E402
from benchmarks.run import evaluate_bundle, one_bundle, write_val_labels  # noqa: E402

__all__ = ["checkpoints", "log_minutes", "checkpoint_minutes", "markdown", "main"]

RESULTS = REPO / "benchmarks" / "results" / "learning-curve"
METRICS = ["f1@0.5", "ap_dsb@0.5", "aji", "coco_ap"]
_EPOCH = re.compile(r"checkpoint_epoch=(\d+)\.pt$")
_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
_COMPLETE = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - \S*SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete"
)


def checkpoints(train_dir: Path) -> dict[int, Path]:
    """``{epoch: path}`` of the ``checkpoint_epoch=N.pt`` files in ``train_dir``, by epoch."""
    found = {int(m.group(1)): p for p in train_dir.glob("checkpoint_epoch=*.pt") if (m := _EPOCH.search(p.name))}
    return dict(sorted(found.items()))


def _stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f")


def log_minutes(log_text: str) -> dict[int, float]:
    """``{epoch: minutes}`` from a training log: each trainer "Epoch[N] Complete" line's time after the log's first
    time stamp."""
    text = log_text.replace("\r", "\n")
    first = _STAMP.search(text)
    if first is None:
        return {}
    start = _stamp(first.group(1))
    return {int(m.group(2)): (_stamp(m.group(1)) - start).total_seconds() / 60 for m in _COMPLETE.finditer(text)}


def checkpoint_minutes(path: Path, from_log: dict[int, float], epoch: int) -> float | None:
    """Training minutes at a checkpoint: its schedule's recorded training time, else the log's."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    elapsed = (state.get("lr_scheduler") or {}).get("_elapsed_before") if isinstance(state, dict) else None
    if elapsed is not None:
        return float(elapsed) / 60
    return from_log.get(epoch)


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# Learning curve: {doc['bundle']} ({doc['name']})",
        "",
        f"Command: `{doc['command']}`  ",
        f"Training run: `{doc['run']}`; overrides: {', '.join(doc['overrides']) or 'none'}.  ",
        f"Machine (scoring): {doc['machine']['cpu']}, {doc['machine']['cores']} cores. Scored on `val` "
        f"({doc['val_images']} images), mean over images.",
        "",
        f"![F1@0.5 against training minutes]({doc['name']}.png)",
        "",
        "| epoch | minutes | " + " | ".join(METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for row in doc["rows"]:
        minutes = "" if row["minutes"] is None else f"{row['minutes']:.1f}"
        values = " | ".join("" if row.get(m) is None else f"{row[m]:.3f}" for m in METRICS)
        lines.append(f"| {row['epoch']} | {minutes} | {values} |")
    return "\n".join(lines) + "\n"


def _plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["rows"] if r["minutes"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["minutes"] for r in rows], [r["f1@0.5"] for r in rows], marker="o", label=doc["bundle"])
    ax.set_xlabel("training minutes")
    ax.set_ylabel("val F1@0.5 (mean over images)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="bundle name under bundles/")
    p.add_argument("run", type=Path, help="a ship.py / run.py work folder (its train/ holds the checkpoints)")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bbbc038", help="dataset folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override when scoring")
    p.add_argument("--jobs", type=int, default=1, help="checkpoints scored at once (one process each)")
    p.add_argument("--name", help="result file name (default: the run folder's name)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    if not (args.run / "train").is_dir():
        p.error(f"{args.run}: no train/ folder of checkpoints")
    if not args.data.is_dir():
        p.error(f"{args.data}: no such dataset folder")
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    bundle = one_bundle(args.bundle)
    found = checkpoints(args.run / "train")
    if not found:
        print(f"error: no checkpoint_epoch=N.pt under {args.run / 'train'}", file=sys.stderr)
        return 1
    log = args.run / "train.log"
    from_log = log_minutes(log.read_text(errors="replace")) if log.is_file() else {}
    gt_dir = args.run / "gt_val"
    val_ids = write_val_labels(args.data, gt_dir)

    def score(epoch: int) -> dict[str, Any]:
        path = found[epoch]
        work = args.run / "curve" / f"epoch={epoch}"
        work.mkdir(parents=True, exist_ok=True)
        scores = evaluate_bundle(bundle, args.data, work, str(path.resolve()), gt_dir, args.set, reuse=True)
        if scores["missing"]:
            raise SystemExit(f"error: epoch {epoch}: no prediction for {len(scores['missing'])} val images ({work})")
        mean = scores["per_image_mean"]
        row = {"epoch": epoch, "minutes": checkpoint_minutes(path, from_log, epoch)}
        row.update({m: mean.get(m) for m in METRICS})
        print(json.dumps(row), flush=True)
        return row

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(score, found))
    name = args.name or args.run.resolve().name
    doc = {
        "bundle": bundle.name,
        "name": name,
        "command": "OMP_NUM_THREADS=1 python benchmarks/learning_curve.py " + shlex.join(argv),
        "run": str(args.run),
        "overrides": list(args.set),
        "machine": machine_info(),
        "val_images": len(val_ids),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(doc))
    _plot(doc, args.out / f"{name}.png")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
