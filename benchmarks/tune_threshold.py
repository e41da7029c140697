"""Choose a bundle's per-object score threshold on ``train`` images only, then (optionally) make it the default.

    OMP_NUM_THREADS=1 python benchmarks/tune_threshold.py partial_maskrcnn               # measure, print, record
    OMP_NUM_THREADS=1 python benchmarks/tune_threshold.py partial_maskrcnn --install     # ... and set the default

Detectors (Mask R-CNN, LACSS, the sparse SEU-Net decoder) keep every object whose score passes ``score_threshold``;
a low value (Mask R-CNN's customary 0.05) is right for score-ranked metrics (COCO AP) but floods F1, PQ and AJI with
false positives. This command predicts every ``--every``-th image of the ``train`` split (never ``val``, which the
shipped scores are measured on) once, with the bundle's weights and the lowest candidate threshold, then keeps for
each candidate ``t`` the objects with score >= ``t`` (the score each object has in the prediction's CSV) and scores
them against the ``train`` labels: the ``t`` with the best mean F1@0.5 over images wins (ties: the lower ``t``).

It applies to bundles whose ``--key`` thresholds the very score each object gets in the CSV (partial_maskrcnn,
lacss); where it does not (sparse_seunet thresholds its objectness before scoring masks), the curve is flat and the
command refuses to install. Filtering the objects after prediction is what the network's own threshold does, except for detectors that cap the
objects per image (the cap is reached only in images with more objects than it) and pixels claimed by two masks
(given to the higher score either way). ``--install`` writes the value to the ``--key`` entry of the bundle's
``train.json`` and ``inference.json``; then ``python benchmarks/ship.py <bundle> --reuse`` scores ``val`` again with
it and records the result in ``metadata.json`` and the docs. Results: ``benchmarks/results/thresholds/<bundle>.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.measure import machine_info  # noqa: E402
from benchmarks.run import _bundle_cmd, _run, discover_bundles  # noqa: E402

__all__ = ["f1_by_threshold", "best_threshold", "record_header", "set_default", "main"]

RESULTS = REPO / "benchmarks" / "results" / "thresholds"
DEFAULT_VALUES = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def f1_by_threshold(pred_dir: Path, gt: dict[str, Path], values: list[float], iou: float = 0.5) -> dict[float, float]:
    """Mean F1@``iou`` over the images of ``gt`` (``{id: label file}``) for each threshold in ``values``, keeping the
    objects of ``pred_dir/<id>.tif`` whose score in ``pred_dir/<id>.csv`` is >= the threshold."""
    from cellseg_monai.data import read_labels
    from cellseg_monai.data.io import DataError
    from cellseg_monai.metrics.folder import read_scores
    from cellseg_monai.metrics.instance import f1

    per_value: dict[float, list[float]] = {v: [] for v in values}
    for image_id, gt_path in sorted(gt.items()):
        pred_path = pred_dir / f"{image_id}.tif"
        if not pred_path.is_file():
            raise DataError(f"{pred_path}: no prediction for train image {image_id}")
        labels, truth = read_labels(pred_path), read_labels(gt_path)
        scores = read_scores(pred_dir / f"{image_id}.csv")
        for v in values:
            keep = np.array([k for k, s in scores.items() if s >= v], dtype=labels.dtype)
            per_value[v].append(f1(truth, np.where(np.isin(labels, keep), labels, 0), t=iou))
    return {v: float(np.mean(f)) for v, f in per_value.items()}


def best_threshold(curve: dict[float, float]) -> float:
    """The threshold with the highest score; the lowest such threshold on a tie."""
    top = max(curve.values())
    return min(v for v, s in curve.items() if s == top)


def set_default(bundle_dir: Path, key: str, value: float) -> list[Path]:
    """Write ``value`` to the top-level ``key`` of the bundle's ``train.json`` and ``inference.json`` (4-space JSON,
    as the model zoo's pre-commit wants); returns the files changed. Raises KeyError if a file lacks ``key``."""
    changed = []
    for name in ("train.json", "inference.json"):
        path = bundle_dir / "configs" / name
        config = json.loads(path.read_text())
        if key not in config:
            raise KeyError(f"{path}: no top-level {key!r} to set")
        config[key] = value
        path.write_text(json.dumps(config, indent=4) + "\n")
        changed.append(path)
    return changed


def record_header(title: str, record: dict[str, Any]) -> str:
    """The heading lines every threshold record shares: title, command, machine, weights and the images used."""
    return (
        f"# {title}: {record['bundle']}\n\nCommand: `{record['command']}`  \n"
        f"Machine: {record['machine_name']}; weights md5 {record['weights_md5']}  \n"
        f"Images: {record['images']} of the `train` split (every {record['every']}th), never `val`\n\n"
    )


def _markdown(record: dict[str, Any]) -> str:
    rows = "\n".join(f"| {v:g} | {s:.3f} |" for v, s in record["curve"])
    return (
        record_header("Score threshold", record) + f"| {record['key']} | mean F1@0.5 |\n|---|---|\n{rows}\n\n"
        f"Chosen: **{record['chosen']:g}** (was {record['previous']:g}).\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bbbc038", help="dataset folder")
    p.add_argument("--key", default="score_threshold", help="the bundle's per-object score threshold id")
    p.add_argument("--values", type=float, nargs="+", default=DEFAULT_VALUES, help="candidate thresholds")
    p.add_argument("--every", type=int, default=8, help="use every N-th train image (8: 67 of BBBC038's 536)")
    p.add_argument("--work", type=Path, help="scratch folder, replaced on each run (default runs/tune/<bundle>)")
    p.add_argument("--install", action="store_true", help="make the chosen value the bundle's default")
    p.add_argument("--weights", type=Path, help="other weights of the bundle's network (default: its models/model.pt)")
    p.add_argument("--name", help="result file name (default: the bundle's name)")
    args = p.parse_args(argv)
    if args.weights is not None and args.install:
        p.error("--install sets the threshold of the shipped weights: it does not go with --weights")
    if args.weights is not None and not args.weights.is_file():
        p.error(f"{args.weights}: no such weights file")
    from benchmarks.ship import md5
    from cellseg_monai.data import load_datalist

    bundles, missing = discover_bundles([args.bundle])
    if missing:
        p.error(f"no bundle {args.bundle!r}")
    bundle = bundles[0]
    config = json.loads(bundle.config("inference.json").read_text())
    if args.key not in config:
        p.error(f"{bundle.config('inference.json')}: no top-level {args.key!r}")
    weights = args.weights if args.weights is not None else bundle.path / "models" / "model.pt"
    work = args.work or REPO / "runs" / "tune" / bundle.name
    work.mkdir(parents=True, exist_ok=True)
    items = load_datalist(args.data, "train")[:: args.every]
    gt = {item["id"]: Path(item["label"]) for item in items}
    predict = [
        *("--dataset_dir", str(args.data), "--ckpt_path", str(weights), "--eval_dir", str(work / "eval")),
        *("--eval_split", "train", f"--{args.key}", repr(min(args.values))),
        *("--validate#datalist", f"$cellseg_monai.data.load_datalist(@dataset_dir, 'train')[::{args.every}]"),
    ]
    if (work / "eval").exists() and not (work / "datalist.json").is_file():
        p.error(f"{work / 'eval'} exists and was not made by this command: choose another --work")
    shutil.rmtree(work / "eval", ignore_errors=True)  # this command's own predictions of an earlier run
    (work / "datalist.json").write_text(json.dumps([{"id": i["id"], "image": i["image"]} for i in items]) + "\n")
    _run(_bundle_cmd(bundle, ["train.json", "evaluate.json"], predict), work / "predict.log")
    curve = f1_by_threshold(work / "eval" / "predictions", gt, sorted(args.values))
    chosen = best_threshold(curve)
    record = {
        "bundle": bundle.name,
        "command": "OMP_NUM_THREADS=1 python benchmarks/tune_threshold.py " + shlex.join(argv),
        "machine_name": f"cpu{machine_info()['cores']}",
        "weights_md5": md5(weights),
        "key": args.key,
        "every": args.every,
        "images": len(gt),
        "curve": [[v, s] for v, s in curve.items()],
        "previous": config[args.key],
        "chosen": chosen,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = args.name or bundle.name
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(_markdown(record))
    print(_markdown(record))
    if len(set(curve.values())) == 1:
        print(
            f"error: F1@0.5 is the same at every {args.key}: the per-object scores in the predictions' CSV are not "
            f"what {args.key} thresholds in this bundle, so it cannot be tuned this way (nothing installed)",
            file=sys.stderr,
        )
        return 1
    if args.install:
        for path in set_default(bundle.path, args.key, chosen):
            print(f"set {args.key} = {chosen:g} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
