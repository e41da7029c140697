"""A paper's results table, reproduced: rows of (bundle, training overrides, evaluation overrides) from a JSON spec.

    python benchmarks/table.py benchmarks/tables/canonical_shape.json            # train, evaluate, write the table
    python benchmarks/table.py benchmarks/tables/canonical_shape.json --reuse    # re-score finished runs only

The spec (``benchmarks/tables/<bundle>.json``)::

    {"title": "...", "dataset": "../shared/data/bbbc038", "minutes": 10 | "epochs": 20, "epoch_length": 25,
     "classic": true, "metrics": ["f1@0.5", "f1_mean", "pixel_iou", ...],
     "rows": [{"label": "...", "bundle": "canonical_shape", "train": {"KEY": value}, "eval": {"KEY": value},
               "epochs": 6}, ...],                                       # "epochs": optional, this row's training
     "paper": {"<row label>": {"<metric>": value}}, "notes": ["..."]}

Every row trains ``bundles/<bundle>/configs/train.json`` on the ``train`` split with its ``train`` overrides (rows
with the same bundle and ``train`` overrides share one training), then predicts the ``val`` split with
``train.json + evaluate.json`` and the ``train`` and ``eval`` overrides, exactly as ``benchmarks/run.py`` does
(:func:`benchmarks.run.train_bundle`, :func:`benchmarks.run.evaluate_bundle`). Metrics are the per-image means of
:func:`cellseg_monai.metrics.folder.evaluate_folders` plus the foreground ``pixel_iou`` / ``pixel_dice`` / ``pixel_f1``
of the label images (labels > 0). Every override key must be an id of the bundle's config (else the spec is
refused). Writes ``<out>/<spec name>-<machine>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.measure import machine_info  # noqa: E402
from benchmarks.run import (  # noqa: E402
    BenchmarkError,
    _default_machine,
    discover_bundles,
    evaluate_bundle,
    run_classic,
    train_bundle,
    write_val_labels,
)

__all__ = ["load_spec", "pixel_scores", "format_markdown", "main"]

PIXEL_METRICS = ("pixel_iou", "pixel_dice", "pixel_f1")


def load_spec(path: Path) -> dict[str, Any]:
    """Read and check a table spec: required keys, known bundles, override keys that exist in the bundle configs."""
    from monai.bundle import ConfigParser

    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the table spec ({e})") from e
    missing = [k for k in ("title", "dataset", "metrics", "rows") if k not in spec]
    if missing or not spec["rows"]:
        raise ValueError(f"{path}: spec needs {missing or ['rows']} (see benchmarks/table.py)")
    bundles = {b.name: b for b in discover_bundles()[0]}
    for i, row in enumerate(spec["rows"]):
        if row.get("bundle") not in bundles or "label" not in row:
            raise ValueError(f"{path}: row {i} needs a label and a bundle of {sorted(bundles)}; got {row}")
        b = bundles[row["bundle"]]
        for part, configs in (("train", ["train.json"]), ("eval", ["train.json", "evaluate.json"])):
            parser = ConfigParser()
            parser.read_config([str(b.config(c)) for c in configs])
            unknown = [k for k in row.get(part, {}) if k not in parser]
            if unknown:
                raise ValueError(f"{path}: row {row['label']!r}: {part} overrides {unknown} are not ids of {b.path}")
    return spec


def _args(overrides: dict[str, Any]) -> list[str]:
    """``{key: value}`` → ``[BUNDLE-less "KEY=VALUE" override strings]`` for benchmarks.run."""
    return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]


def _slug(bundle: str, overrides: dict[str, Any]) -> str:
    text = json.dumps(overrides, sort_keys=True)
    return f"{bundle}-{hashlib.md5(text.encode()).hexdigest()[:8]}"


def pixel_scores(pred_dir: Path, gt_dir: Path) -> dict[str, float]:
    """Foreground pixel IoU, Dice and F1 of label images (labels > 0 vs GT > 0), mean over the GT images."""
    import numpy as np

    from cellseg_monai.data import read_labels
    from cellseg_monai.metrics.pixel import pixel_dice, pixel_f1, pixel_iou

    vals: dict[str, list[float]] = {k: [] for k in PIXEL_METRICS}
    for gt_path in sorted(gt_dir.glob("*.tif")):
        gt = read_labels(gt_path)
        pred_path = pred_dir / gt_path.name
        fg = (read_labels(pred_path) > 0).astype(np.float32) if pred_path.is_file() else np.zeros(gt.shape, np.float32)
        for name, fn in zip(PIXEL_METRICS, (pixel_iou, pixel_dice, pixel_f1), strict=True):
            vals[name].append(fn(fg, gt))
    return {k: float(np.nanmean(v)) if v else float("nan") for k, v in vals.items()}


def _scores(per_image_mean: dict[str, Any], pred_dir: Path, gt_dir: Path, metrics: list[str]) -> dict[str, Any]:
    """The per-image means, plus pixel scores, plus the spec's metrics that ``evaluate_folders``' default set lacks
    (e.g. ``ncs``), computed on the same predictions. Score-ranked metrics are left out (shown as "–") when the
    method writes no per-object scores (the classic baseline)."""
    from cellseg_monai.metrics.folder import SCORED_NAMES, evaluate_folders

    scores = {**per_image_mean, **pixel_scores(pred_dir, gt_dir)}
    extra = [m for m in metrics if m not in scores and m not in SCORED_NAMES]
    if extra:
        scores.update(evaluate_folders(pred_dir, gt_dir, names=extra)["per_image_mean"])
    return scores


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) and x == x else "–"


def format_markdown(doc: dict[str, Any]) -> str:
    """The table (ours, then the paper's numbers where the spec gives them) and how it was made."""
    metrics = doc["spec"]["metrics"]
    lines = [f"# {doc['spec']['title']}", "", f"`{doc['command']}`", ""]
    lines += [
        f"Machine: {doc['machine_name']} ({doc['machine'].get('cpu', '?')}, torch threads "
        f"{doc['machine'].get('torch_threads', '?')}). Dataset: {doc['dataset']} val, {doc['val_images']} images; "
        "metrics are means over images.",
        "",
        "| row | " + " | ".join(metrics) + " | training |",
        "|---|" + "---|" * (len(metrics) + 1),
    ]
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['label']} | " + " | ".join("error" for _ in metrics) + f" | {r['error'][:80]} |")
            continue
        t = r.get("train")
        train = f"{t['iterations']} it, {t['seconds'] / 60:.1f} min" if t else "none"
        lines.append(f"| {r['label']} | " + " | ".join(_fmt(r["scores"].get(m)) for m in metrics) + f" | {train} |")
    paper = doc["spec"].get("paper") or {}
    for label, vals in paper.items():
        lines.append(f"| *paper: {label}* | " + " | ".join(_fmt(vals.get(m)) for m in metrics) + " | |")
    lines += [""] + [f"- {n}" for n in doc["spec"].get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", type=Path)
    p.add_argument("--data", type=Path, help="dataset (default: the spec's)")
    p.add_argument("--minutes", type=float, help="wall-clock training budget (default: the spec's)")
    p.add_argument("--epochs", type=int, help="epochs instead of minutes (default: the spec's)")
    p.add_argument("--machine", help="machine name in the file names (default cpu<cores> / gpu-<name>)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--work", type=Path, help="runs (default runs/tables/<spec>-<machine>)")
    p.add_argument("--reuse", action="store_true", help="reuse finished trainings and predictions in --work")
    p.add_argument("--only", nargs="+", help="row labels to run (default all)")
    args = p.parse_args(argv)
    spec = load_spec(args.spec)
    data = args.data or Path(spec["dataset"])
    if not data.is_absolute() and not data.is_dir():
        data = REPO / data
    if not data.is_dir():
        p.error(f"{data}: no such dataset folder")
    epochs = args.epochs or spec.get("epochs")
    minutes = args.minutes if args.minutes is not None else spec.get("minutes", 10.0)
    max_epochs, minutes = (epochs, 0.0) if epochs else (100000, minutes)
    epoch_length = int(spec.get("epoch_length", 25))
    machine = args.machine or _default_machine()
    work = args.work or REPO / "runs" / "tables" / f"{args.spec.stem}-{machine}"
    gt_dir = work / "gt_val"
    val_ids = write_val_labels(data, gt_dir)
    bundles = {b.name: b for b in discover_bundles()[0]}

    rows: list[dict[str, Any]] = []
    if spec.get("classic", False):
        print("== classic", flush=True)
        res = run_classic(data, work / "classic", gt_dir, warmup=1, reuse=args.reuse)
        scores = _scores(res["per_image_mean"], work / "classic" / "predictions", gt_dir, spec["metrics"])
        rows.append({"label": "classic (Otsu + watershed)", "scores": scores, "train": None})
    trained: dict[str, dict[str, Any]] = {}
    for row in spec["rows"]:
        if args.only and row["label"] not in args.only:
            continue
        print(f"== {row['label']}", flush=True)
        bundle, tr, ev = bundles[row["bundle"]], row.get("train", {}), row.get("eval", {})
        row_epochs, row_minutes = (row["epochs"], 0.0) if row.get("epochs") else (max_epochs, minutes)
        train_dir = work / _slug(bundle.name, tr if not row.get("epochs") else {**tr, "_epochs": row["epochs"]})
        try:
            if train_dir.name not in trained:
                trained[train_dir.name] = train_bundle(
                    bundle, data, train_dir, None, row_minutes, row_epochs, epoch_length, _args(tr), args.reuse
                )
            train = trained[train_dir.name]
            row_dir = train_dir / ("eval-" + _slug("", ev).strip("-"))
            res = evaluate_bundle(bundle, data, row_dir, train["checkpoint"], gt_dir, _args({**tr, **ev}), args.reuse)
            scores = _scores(res["per_image_mean"], row_dir / "eval" / "predictions", gt_dir, spec["metrics"])
            rows.append({**row, "scores": scores, "train": train, "eval_seconds": res["eval_seconds"]})
        except (BenchmarkError, OSError, ValueError) as e:
            print(f"!! {row['label']} failed: {e}", flush=True)
            rows.append({**row, "error": str(e)})
    doc = {
        "command": "python benchmarks/table.py " + shlex.join(argv),
        "spec": spec,
        "dataset": data.resolve().name,
        "val_images": len(val_ids),
        "machine_name": machine,
        "machine": machine_info(),
        "settings": {"minutes": minutes, "max_epochs": max_epochs, "epoch_length": epoch_length},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.spec.stem}-{machine}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(format_markdown(doc))
    print(f"wrote {stem}.md and .json", flush=True)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
