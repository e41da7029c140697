"""Fine-tuning from pre-trained weights vs training from scratch, on images the weights did not see (issue 15, point 3).

    OMP_NUM_THREADS=1 python benchmarks/finetune.py impartial --pretrain-minutes 30 --minutes 2 5 10
    OMP_NUM_THREADS=1 python benchmarks/finetune.py lacss --pretrain-minutes 30 --minutes 2 5 10
    python benchmarks/finetune.py impartial --dry-run          # the two image sets and the runs, without training

Protocol, one command per bundle, with the bundle's own ``configs/train.json`` defaults and seed:

1. BBBC038 (``--data``) is split by imaging modality, each image by its pixels (:func:`modality`): *fluorescence*
   (grey, bright nuclei on a dark background) and *shifted* (grey brightfield with dark nuclei, and colour images,
   mostly H&E). The dataset's own ``train``/``val`` split is kept inside each set; both sets are folders of
   symbolic links in the standard layout (``<work>/data/fluorescence``, ``<work>/data/shifted``).
2. **Pre-training**: the bundle trains on the fluorescence ``train`` images only, for ``--pretrain-minutes`` of wall
   clock, with the weak labels of the bundle (``--budget``: ImPartial 10 % scribbles; LACSS its points).
3. For each ``--minutes`` m: **fine-tuning** trains on the shifted ``train`` images for m minutes starting from the
   pre-trained weights (``--init_ckpt``, :class:`cellseg_monai.handlers.InitWeights`), and **scratch** trains the same
   m minutes from the random initialisation. Validation is off during training (``val`` stays unseen).
4. Every model (and the pre-trained one, "0 min": how far the shift alone takes it) predicts the shifted ``val``
   images through ``train.json + evaluate.json``; :func:`cellseg_monai.metrics.folder.evaluate_folders` scores them
   (mean over images).

Writes ``benchmarks/results/finetune-<bundle>-<machine>.md/.json`` (table: start, minutes, iterations, F1@0.5, DSB
AP@0.5, the bundle's own metric) and ``.png`` (F1@0.5 vs minutes, fine-tuned and scratch). ``--reuse`` reuses
finished runs in ``--work``. The runs are CPU minutes as every other benchmark here (``OMP_NUM_THREADS=1``, one run at
a time); on a GPU machine the same command records ``gpu`` as the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.measure import machine_info  # noqa: E402
from benchmarks.run import evaluate_bundle, one_bundle, train_bundle, write_val_labels  # noqa: E402
from benchmarks.ship import network_state_dict  # noqa: E402
from cellseg_monai.data import image_kind  # noqa: E402

__all__ = ["MODALITIES", "main", "make_subset", "modality", "split_by_modality"]

RESULTS = REPO / "benchmarks" / "results"
#: default annotation budget per bundle (None: the bundle's own default annotation)
BUDGETS: dict[str, float | None] = {"impartial": 0.1, "lacss": None}
MODALITIES = ("fluorescence", "shifted")
#: metrics reported (per-image means); the first is the issue's headline
REPORTED = ["f1@0.5", "ap_dsb@0.5", "f1_mean", "ap@0.5"]


def modality(image: np.ndarray) -> str:
    """``"fluorescence"`` or ``"shifted"`` (the other two kinds of :func:`image_kind`: colour images, mostly H&E, and
    grey brightfield with dark nuclei)."""
    return "fluorescence" if image_kind(image) == "fluorescence" else "shifted"


def split_by_modality(data: Path) -> dict[str, dict[str, list[str]]]:
    """``{modality: {"train": ids, "val": ids}}`` of the dataset's own train and val splits."""
    from cellseg_monai.data import load_datalist, read_image

    out: dict[str, dict[str, list[str]]] = {m: {"train": [], "val": []} for m in MODALITIES}
    for split in ("train", "val"):
        for item in load_datalist(data, split):
            out[modality(read_image(item["image"]))][split].append(item["id"])
    return out


def make_subset(data: Path, out: Path, ids: dict[str, list[str]]) -> Path:
    """A standard-layout folder of symbolic links to ``data``'s images and labels of ``ids`` (``{split: ids}``), with
    its ``split.json``; rebuilt when it exists."""
    from cellseg_monai.data import load_datalist

    items = {item["id"]: item for split in ("train", "val") for item in load_datalist(data, split)}
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for old in (out / sub).iterdir():
            old.unlink()
    for split_ids in ids.values():
        for i in split_ids:
            for key, sub in (("image", "images"), ("label", "labels")):
                src = Path(items[i][key]).resolve()
                os.symlink(src, out / sub / f"{i}{src.suffix}")
    (out / "split.json").write_text(json.dumps(ids, indent=1) + "\n")
    return out


def _score(bundle: Any, data: Path, work: Path, weights: Path, gt_dir: Path, reuse: bool) -> dict[str, float]:
    scores = evaluate_bundle(bundle, data, work, str(weights), gt_dir, [], reuse)
    if scores["missing"]:
        raise RuntimeError(f"{work}: no prediction for {len(scores['missing'])} val images")
    mean = scores["per_image_mean"]
    return {k: float(mean[k]) for k in REPORTED if mean.get(k) is not None}


def _train(
    bundle: Any,
    data: Path,
    work: Path,
    budget: float | None,
    minutes: float,
    args: argparse.Namespace,
    overrides: list[str],
) -> tuple[Path, dict[str, Any]]:
    work.mkdir(parents=True, exist_ok=True)
    record = train_bundle(bundle, data, work, budget, minutes, 100000, args.epoch_length, overrides, args.reuse)
    weights = work / "model.pt"
    torch.save(network_state_dict(record["checkpoint"]), str(weights))
    return weights, record


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for start, style in (("fine-tuned", "o-"), ("scratch", "s--")):
        pts = sorted((r["minutes"], r["val"]["f1@0.5"]) for r in rows if r["start"] in (start, "pre-trained only"))
        if start == "scratch":
            pts = [p for p in pts if p[0] > 0]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=start)
    ax.set_xlabel("training minutes on the shifted images")
    ax.set_ylabel("F1@0.5 on their val images")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(record: dict[str, Any]) -> str:
    names = [k for k in REPORTED if any(k in r["val"] for r in record["rows"])]
    lines = [
        f"# Fine-tuning vs scratch on a modality shift: {record['bundle']}",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_name']} ({record['machine'].get('cpu', '?')}), torch threads {record['threads']}, "
        f"seed {record['seed']}, annotation budget {record['budget']}  ",
        f"Pre-training: BBBC038 fluorescence `train` ({record['images']['fluorescence']['train']} images), "
        f"{record['pretrain_minutes']:g} min, {record['pretrain_iterations']} iterations  ",
        f"Scored on: BBBC038 shifted `val` ({record['images']['shifted']['val']} images: colour/H&E and brightfield), "
        f"mean over images; trained on shifted `train` ({record['images']['shifted']['train']} images)",
        "",
        "| start | minutes | iterations | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for r in record["rows"]:
        vals = " | ".join(f"{r['val'][k]:.3f}" if k in r["val"] else "—" for k in names)
        lines.append(f"| {r['start']} | {r['minutes']:g} | {r['iterations']} | {vals} |")
    return "\n".join(lines + ["", f"![F1@0.5 vs minutes]({record['plot']})", ""])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="bundle name under bundles/ (impartial, lacss, ...)")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bbbc038", help="dataset folder")
    p.add_argument("--pretrain-minutes", type=float, default=30.0, help="pre-training budget on fluorescence")
    p.add_argument("--minutes", type=float, nargs="+", default=[2.0, 5.0, 10.0], help="fine-tuning budgets")
    p.add_argument("--budget", type=float, help="annotation budget (default: impartial 0.1, else the bundle's)")
    p.add_argument("--epoch-length", type=int, default=10, help="iterations per epoch (time-limit granularity)")
    p.add_argument("--work", type=Path, help="runs (default runs/finetune/<bundle>)")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs in --work")
    p.add_argument("--dry-run", action="store_true", help="split the data and print the plan; train nothing")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        p.error(f"{args.data}: no such dataset folder")
    if args.pretrain_minutes <= 0 or any(m <= 0 for m in args.minutes):
        p.error("--pretrain-minutes and --minutes must be > 0")
    args.work = args.work or REPO / "runs" / "finetune" / args.bundle
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    bundle = one_bundle(args.bundle)
    budget = args.budget if args.budget is not None else BUDGETS.get(bundle.name)
    ids = split_by_modality(args.data)
    sets = {m: make_subset(args.data, args.work / "data" / m, ids[m]) for m in MODALITIES}
    counts = {m: {s: len(v) for s, v in ids[m].items()} for m in MODALITIES}
    print(json.dumps({"images": counts, "budget": budget}), flush=True)
    runs = [("pre-train", "fluorescence", args.pretrain_minutes)]
    runs += [(f"{start} {m:g} min", "shifted", m) for m in args.minutes for start in ("fine-tune", "scratch")]
    if args.dry_run:
        for name, data, minutes in runs:
            print(f"{name}: train on {sets[data]} for {minutes:g} min; score on {sets['shifted']} val", flush=True)
        return 0

    gt_dir = args.work / "gt_shifted_val"
    write_val_labels(sets["shifted"], gt_dir)
    pre_weights, pre = _train(
        bundle, sets["fluorescence"], args.work / "pretrain", budget, args.pretrain_minutes, args, []
    )
    rows = [
        {
            "start": "pre-trained only",
            "minutes": 0.0,
            "iterations": 0,
            "val": _score(bundle, sets["shifted"], args.work / "pretrain", pre_weights, gt_dir, args.reuse),
        }
    ]
    for m in args.minutes:
        for start, overrides in (("fine-tuned", [f"init_ckpt={pre_weights}"]), ("scratch", [])):
            work = args.work / f"{start}-{m:g}min"
            weights, rec = _train(bundle, sets["shifted"], work, budget, m, args, overrides)
            rows.append(
                {
                    "start": start,
                    "minutes": m,
                    "iterations": rec["iterations"],
                    "val": _score(bundle, sets["shifted"], work, weights, gt_dir, args.reuse),
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    machine = f"cpu{machine_info()['cores']}" if not torch.cuda.is_available() else "gpu"
    stem = f"finetune-{bundle.name}-{machine}"
    record = {
        "bundle": bundle.name,
        "command": "OMP_NUM_THREADS=1 python benchmarks/finetune.py " + shlex.join(a for a in argv if a != "--reuse"),
        "machine_name": machine,
        "machine": machine_info(),
        "threads": torch.get_num_threads(),
        "seed": json.loads(bundle.config("train.json").read_text()).get("seed", 0),
        "budget": budget,
        "images": counts,
        "pretrain_minutes": args.pretrain_minutes,
        "pretrain_iterations": pre["iterations"],
        "rows": rows,
        "plot": f"{stem}.png",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    _plot(rows, RESULTS / f"{stem}.png", f"{bundle.name}: fluorescence pre-training → shifted images")
    (RESULTS / f"{stem}.md").write_text(_markdown(record))
    print(f"wrote {RESULTS / stem}.md/.json/.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
