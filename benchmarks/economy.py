"""Label economy: F1@0.5 on ``val`` against the share of nuclei annotated and against the annotator's time.

    OMP_NUM_THREADS=1 python benchmarks/economy.py --minutes 8

One command for the table and the plot: it runs ``benchmarks/run.py`` (``--reuse``: finished runs are kept) for the
weak bundles at the annotation budgets 1, 2, 5, 10, 25 and 100 % of each image's nuclei and for the
full-supervision reference (``supervised_unet``, every nucleus outlined) with the same wall-clock minutes of
training each, then prices every budget in annotator time and writes
``benchmarks/results/economy/label-economy-<machine>.md``, ``.json`` and ``.png``.

Cost of one annotation (``--seconds``, configurable; the defaults and where they come from):

- ``outline`` 54 s per object: the lower of the two per-object outline times quoted by Bearman et al. ("What's the
  point", ECCV 2016, Sec. 1: "between 54 s and 79 s"; 79.2 s is COCO's polygon time, Lin et al. 2014). Those are
  natural-image objects; a nucleus outline is simpler, so this favours full supervision less than it seems.
- ``point`` 2.1 s per object: one click, the difference between the per-image times Bearman et al. report for
  point-level (22.1 s) and image-level (20.0 s) labels on PASCAL VOC 2012.
- ``scribble`` 5 s per object: our assumption (no published per-nucleus figure found): a short stroke inside the
  nucleus and its share of the background strokes, about twice a click.

The number of nuclei a budget annotates is counted exactly as the simulator draws them
(:func:`cellseg_monai.annotations.scribbles.budget_count`: ``max(1, ceil(budget * n))`` per image, so 1 % still
annotates one nucleus in every image), summed over the ``train`` labels. A budget's cost is that count times the
seconds of its annotation kind; full supervision costs every nucleus times ``outline``. The goal the table checks:
a weak bundle reaching >= 95 % of the full-supervision F1@0.5 at <= 5 % of its annotation cost.

LACSS (points) learns from a fraction of clicked nuclei since its bundle 0.3.0: ``annotation_budget`` clicks that
share of each image's nuclei and ``partial_points`` leaves the unclicked foreground out of its losses
(:mod:`cellseg_monai.losses.lacss`). Its curve was measured on another machine than the ImPartial one, so it has a
table of its own next to a reference trained there for the same minutes::

    OMP_NUM_THREADS=1 python benchmarks/economy.py --minutes 5 --bundles lacss supervised_unet --machine cpu2-epyc
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.report import budget_curves  # noqa: E402

__all__ = ["SECONDS", "KIND", "annotated_objects", "economy_rows", "markdown", "main"]

SECONDS = {"outline": 54.0, "point": 2.1, "scribble": 5.0}
KIND = {"impartial": "scribble", "lacss": "point", "partial_maskrcnn": "outline"}  # weak bundle → annotation kind
BUDGETS = [0.01, 0.02, 0.05, 0.1, 0.25, 1.0]
GOAL_F1, GOAL_COST = 0.95, 0.05


def annotated_objects(object_counts: list[int], budget: float) -> int:
    """Nuclei a fractional ``budget`` annotates over images with ``object_counts`` nuclei each (the simulator's
    own rounding)."""
    from cellseg_monai.annotations.scribbles import budget_count

    return int(sum(budget_count(float(budget), int(n)) for n in object_counts))


def economy_rows(doc: dict[str, Any], object_counts: list[int], seconds: dict[str, float]) -> dict[str, Any]:
    """Per weak bundle and budget: nuclei annotated, hours, cost and F1 relative to full supervision."""
    curves = budget_curves(doc)
    total = int(sum(object_counts))
    full_hours = total * seconds["outline"] / 3600
    references = {k: v for k, v in curves["reference"].items() if "classic" not in k}
    if len(references) != 1:
        raise ValueError(f"need exactly one full-supervision reference in the run, got {sorted(references)}")
    ((reference, full_f1),) = references.items()
    rows = []
    for bundle, points in curves["weak"].items():
        kind = KIND.get(bundle, "outline")
        for budget, f1 in points:
            n = annotated_objects(object_counts, budget)
            hours = n * seconds[kind] / 3600
            rows.append(
                {
                    "bundle": bundle,
                    "kind": kind,
                    "budget": budget,
                    "objects": n,
                    "objects_fraction": n / total,
                    "hours": hours,
                    "cost_fraction": hours / full_hours,
                    "f1@0.5": f1,
                    "f1_fraction": f1 / full_f1 if full_f1 > 0 else float("nan"),
                }
            )
    for r in rows:
        r["meets_goal"] = bool(r["f1_fraction"] >= GOAL_F1 and r["cost_fraction"] <= GOAL_COST)
    return {"reference": reference, "full_f1": full_f1, "full_hours": full_hours, "objects": total, "rows": rows}


def markdown(record: dict[str, Any], png_name: str) -> str:
    e = record["economy"]
    lines = [
        f"# Label economy: {record['dataset']} ({record['machine_name']})",
        "",
        f"Command: `{record['command']}`  ",
        f"Training: {record['minutes']:g} min wall clock per run on the `train` split ({record['train_images']} images, "
        f"{e['objects']} nuclei), seed 0; scored on `val` ({record['val_images']} images, F1@0.5 mean over images).  ",
        f"Machine: {record['machine']}; the runs: `{record['run_command']}` (`{record['run_results']}`).  ",
        "Seconds per annotation: "
        + ", ".join(f"{k} {v:g} s" for k, v in record["seconds"].items())
        + " (sources in `benchmarks/economy.py`).",
        "",
        f"![F1@0.5 vs annotation hours]({png_name})",
        "",
        "| method | budget | nuclei annotated | annotation | hours | % of full cost | F1@0.5 | % of full F1 | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in e["rows"]:
        lines.append(
            f"| {r['bundle']} | {100 * r['budget']:g} % | {r['objects']} ({100 * r['objects_fraction']:.1f} %) | "
            f"{r['kind']} | {r['hours']:.2f} | {100 * r['cost_fraction']:.2f} % | {r['f1@0.5']:.3f} | "
            f"{100 * r['f1_fraction']:.1f} % | {'yes' if r['meets_goal'] else 'no'} |"
        )
    lines.append(
        f"| {e['reference']} | 100 % | {e['objects']} (100 %) | outline | {e['full_hours']:.2f} | "
        f"100 % | {e['full_f1']:.3f} | 100 % | |"
    )
    lines += [
        "",
        f"Goal: >= {100 * GOAL_F1:g} % of the full-supervision F1@0.5 at <= {100 * GOAL_COST:g} % of its annotation "
        f"cost. Both sides trained for the same minutes, so the comparison is at equal compute, not at convergence.",
        "",
    ]
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = record["economy"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for bundle in dict.fromkeys(r["bundle"] for r in e["rows"]):
        rows = [r for r in e["rows"] if r["bundle"] == bundle]
        ax.plot(
            [r["hours"] for r in rows], [r["f1@0.5"] for r in rows], marker="o", label=f"{bundle} ({rows[0]['kind']}s)"
        )
        for r in rows:
            ax.annotate(
                f"{100 * r['budget']:g} %",
                (r["hours"], r["f1@0.5"]),
                fontsize=7,
                xytext=(3, -9),
                textcoords="offset points",
            )
    ax.plot([e["full_hours"]], [e["full_f1"]], marker="s", color="k", linestyle="none", label=e["reference"])
    ax.axhline(GOAL_F1 * e["full_f1"], color="k", linestyle=":", linewidth=0.8, label=f"{100 * GOAL_F1:g} % of full F1")
    ax.axvline(
        GOAL_COST * e["full_hours"],
        color="grey",
        linestyle="--",
        linewidth=0.8,
        label=f"{100 * GOAL_COST:g} % of full cost",
    )
    ax.set_xscale("log")
    ax.set_xlabel("annotation time for the train split (hours, log scale)")
    ax.set_ylabel("F1@0.5 on val (mean over images)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Label economy, {record['dataset']} ({record['machine_name']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def train_object_counts(data: Path) -> list[int]:
    """Nuclei per ``train`` image (distinct non-zero label ids)."""
    from cellseg_monai.data import load_datalist, read_labels

    return [int(np.count_nonzero(np.unique(read_labels(item["label"])))) for item in load_datalist(data, "train")]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bbbc038", help="dataset folder")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock training minutes per run")
    p.add_argument(
        "--bundles", nargs="+", default=["impartial", "supervised_unet"], help="weak bundles + one reference"
    )
    p.add_argument("--budgets", type=float, nargs="+", default=BUDGETS, help="fractions of each image's nuclei")
    p.add_argument("--seconds", nargs="+", default=[], metavar="KIND=S", help="override seconds per annotation")
    p.add_argument("--machine", default="cpu2", help="machine name in the result file names")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "economy", help="results folder")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "economy", help="training runs (reused)")
    args = p.parse_args(argv)
    seconds = dict(SECONDS)
    for item in args.seconds:
        kind, _, value = item.partition("=")
        if kind not in SECONDS:
            p.error(f"--seconds {item!r}: kind must be one of {sorted(SECONDS)}")
        seconds[kind] = float(value)

    run_argv = ["--data", str(args.data), "--budgets", *map(str, args.budgets), "--minutes", f"{args.minutes:g}"]
    run_argv += ["--bundles", *args.bundles, "--no-classic", "--machine", args.machine, "--out", str(args.out)]
    run_argv += ["--work", str(args.work), "--reuse"]
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), *run_argv], check=True, cwd=REPO)
    run_json = args.out / f"{args.data.name}-{args.machine}.json"
    doc = json.loads(run_json.read_text())
    counts = train_object_counts(args.data)
    record = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/economy.py " + shlex.join(argv),
        "run_command": doc["command"],
        "run_results": str(run_json.relative_to(REPO)) if run_json.is_relative_to(REPO) else str(run_json),
        "dataset": doc["dataset"],
        "machine_name": args.machine,
        "machine": f"{doc['machine']['cpu']}, {doc['machine']['cores']} cores, torch threads "
        f"{doc['machine']['torch_threads']}",
        "minutes": args.minutes,
        "train_images": len(counts),
        "val_images": doc["val_images"],
        "seconds": seconds,
        "economy": economy_rows(doc, counts, seconds),
    }
    stem = args.out / f"label-economy-{args.machine}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    plot(record, stem.with_suffix(".png"))
    stem.with_suffix(".md").write_text(markdown(record, stem.with_suffix(".png").name))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
