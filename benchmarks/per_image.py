"""Where a bundle loses: its F1@0.5 on every ``val`` image, by kind of image, and the images that cost it most.

    OMP_NUM_THREADS=1 python benchmarks/per_image.py impartial                      # the shipped weights
    OMP_NUM_THREADS=1 python benchmarks/per_image.py impartial --weights runs/ship/x/model.pt --set KEY=VALUE

A mean F1@0.5 over images hides which images pull it down. This command runs the bundle's ``inference.json``
(``preprocessing``, ``inferer``, ``postprocessing_transforms``, with ``--set`` config overrides) with the shipped
``models/model.pt`` or ``--weights`` on every image of ``--split`` (``val`` by default: the images the shipped scores
are measured on; nothing is chosen here) and scores each against its labels. Per image it records F1@0.5,
precision and recall at IoU 0.5, the number of objects and the fraction of pixels labelled foreground, predicted and
true (a method that takes whole cells for nuclei predicts ten times the true foreground). Images are grouped by kind
(:func:`cellseg_monai.data.image_kind`: fluorescence, grey brightfield with dark nuclei, colour); each kind's *loss*
is its share of the gap to a perfect mean, ``sum(1 - F1) / n_images``, so the kinds' losses add up to ``1 - mean``.
Writes ``benchmarks/results/per-image/<bundle>-<split>.md`` and ``.json`` (``--name`` replaces the bundle name in the
file names, for a run with other weights or settings).

``--scribbles`` (a bundle trained on simulated scribbles, e.g. ImPartial, scored on the ``train`` split) also asks
how well the network fits the labels it was trained with: the scribbles are simulated exactly as its ``train.json``
does (``annotation_budget``, ``scribble_fov``, ``seed``, the image id) and each image records the fraction of its
background-scribble pixels that the prediction puts inside an object, and of its foreground-scribble pixels that it
leaves out. A network that misses its own training labels underfits them; one that fits them and still fails on
``val`` does not generalise.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.infer import parse_override  # noqa: E402
from benchmarks.measure import machine_info  # noqa: E402
from benchmarks.run import discover_bundles  # noqa: E402
from benchmarks.tune_decoding import _parser, predict  # noqa: E402
from cellseg_monai.data import image_kind  # noqa: E402

__all__ = ["image_row", "scribble_fit", "scribble_settings", "summarize", "main"]

RESULTS = REPO / "benchmarks" / "results" / "per-image"
SCORES = ["f1@0.5", "precision@0.5", "recall@0.5"]


def image_row(image_id: str, kind: str, truth: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """One image's record: its scores at IoU 0.5, object counts and foreground fractions, true and predicted, and how
    many of the true objects that touch the image border (``border_*``) and of the others (``inner_*``) a predicted
    object matches at IoU >= 0.5 (``*_found`` of ``*_objects``)."""
    from cellseg_monai.metrics.instance import instance_scores, recall
    from cellseg_monai.postprocessing import labels_on_border

    scores = instance_scores(truth, labels, names=SCORES)
    on_border = labels_on_border(truth)
    found = {}
    for part, ids in (("border", on_border), ("inner", np.setdiff1d(np.unique(truth[truth > 0]), on_border))):
        subset = np.where(np.isin(truth, ids), truth, 0)
        found[f"{part}_objects"] = int(len(ids))
        found[f"{part}_found"] = int(round(recall(subset, labels, 0.5) * len(ids))) if len(ids) else 0
    return {
        "id": image_id,
        "kind": kind,
        "shape": [int(s) for s in truth.shape],
        **{k: float(v) for k, v in scores.items()},
        "objects": int(len(np.unique(truth[truth > 0]))),
        "predicted": int(len(np.unique(labels[labels > 0]))),
        "fg_true": float((truth > 0).mean()),
        "fg_predicted": float((labels > 0).mean()),
        **found,
    }


def scribble_fit(scribbles: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How a prediction treats the scribbles: the fraction of background-scribble pixels inside a predicted object
    and of foreground-scribble pixels outside every object (NaN where the image has no such scribble)."""
    from cellseg_monai.annotations.scribbles import BACKGROUND

    inside = labels > 0
    back, fore = scribbles == BACKGROUND, scribbles > BACKGROUND
    return {
        "bg_scribble_in_object": float(inside[back].mean()) if back.any() else float("nan"),
        "fg_scribble_missed": float((~inside[fore]).mean()) if fore.any() else float("nan"),
    }


def scribble_settings(train_config: dict[str, Any]) -> dict[str, Any]:
    """``simulate_scribbles`` keyword arguments of a bundle's ``train.json`` (its budget, field of view and seed)."""
    missing = [k for k in ("annotation_budget", "scribble_fov") if k not in train_config]
    if missing:
        raise ValueError(f"the bundle's train.json has no {missing}: it is not trained on simulated scribbles")
    return {
        "budget": train_config["annotation_budget"],
        "fov": train_config["scribble_fov"],
        "seed": train_config.get("seed", 0),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per kind of image (and ``"all"``): images, mean F1@0.5, loss = sum(1 - F1) / all images, and the recall@0.5
    of the true objects on the image border and inside it, pooled over the kind's images."""
    total = len(rows)
    out = {}
    for kind in ["all", *sorted({r["kind"] for r in rows})]:
        f1s = [r["f1@0.5"] for r in rows if kind == "all" or r["kind"] == kind]
        out[kind] = {
            "images": len(f1s),
            "f1@0.5": float(np.mean(f1s)),
            "loss": float(np.sum(1 - np.array(f1s)) / total),
        }
        for part in [p for p in ("border", "inner") if any(f"{p}_objects" in r for r in rows)]:
            objects = sum(r.get(f"{part}_objects", 0) for r in rows if kind == "all" or r["kind"] == kind)
            found = sum(r.get(f"{part}_found", 0) for r in rows if kind == "all" or r["kind"] == kind)
            out[kind][f"{part}_recall"] = found / objects if objects else float("nan")
        for key in ("bg_scribble_in_object", "fg_scribble_missed"):
            values = [r[key] for r in rows if key in r and (kind == "all" or r["kind"] == kind)]
            if values:
                out[kind][key] = float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")
    return out


def _markdown(record: dict[str, Any], worst: int) -> str:
    lines = [
        f"# Per image: {record['name']} on {record['split']}",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_name']}; weights {record['weights']}",
        "",
    ]
    fit = "bg_scribble_in_object" in record["kinds"]["all"]
    if fit:
        lines += [
            "| kind | images | mean F1@0.5 | loss (share of 1 − mean) | recall@0.5 on the border / inside | "
            "background scribble inside an object | foreground scribble missed |",
            "|---|---|---|---|---|---|---|",
        ]
    else:
        lines += [
            "| kind | images | mean F1@0.5 | loss (share of 1 − mean) | recall@0.5 on the border / inside |",
            "|---|---|---|---|---|",
        ]
    for kind, s in record["kinds"].items():
        row = (
            f"| {kind} | {s['images']} | {s['f1@0.5']:.3f} | {s['loss']:.3f} | "
            f"{s.get('border_recall', float('nan')):.3f} / {s.get('inner_recall', float('nan')):.3f} |"
        )
        if fit:
            row += f" {s['bg_scribble_in_object']:.3f} | {s['fg_scribble_missed']:.3f} |"
        lines.append(row)
    lines += [
        "",
        f"The {worst} images with the lowest F1@0.5:",
        "",
        "| image | kind | size | F1@0.5 | precision | recall | objects true / predicted | foreground true / predicted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(record["images"], key=lambda r: r["f1@0.5"])[:worst]:
        lines.append(
            f"| {r['id'][:8]} | {r['kind']} | {r['shape'][0]}×{r['shape'][1]} | {r['f1@0.5']:.3f} | "
            f"{r['precision@0.5']:.3f} | {r['recall@0.5']:.3f} | {r['objects']} / {r['predicted']} | "
            f"{r['fg_true']:.3f} / {r['fg_predicted']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bbbc038", help="dataset folder")
    p.add_argument("--split", default="val", help="split to score (default val)")
    p.add_argument("--weights", type=Path, help="network weights (default: the bundle's models/model.pt)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config id override (run.py syntax)")
    p.add_argument("--name", help="name in the result file names (default: the bundle's)")
    p.add_argument("--worst", type=int, default=15, help="images listed in the markdown table")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    p.add_argument("--scribbles", action="store_true", help="also score the fit of the training scribbles")
    p.add_argument("--every", type=int, default=1, help="score every N-th image of the split")
    p.add_argument("--kinds", nargs="+", help="score only these kinds of image (e.g. brightfield colour)")
    args = p.parse_args(argv)
    from monai.transforms import Compose

    from cellseg_monai.data import load_datalist, read_image

    bundles, missing = discover_bundles([args.bundle])
    if missing:
        p.error(f"no bundle {args.bundle!r}")
    bundle = bundles[0]
    weights = args.weights or bundle.path / "models" / "model.pt"
    if not weights.is_file():
        p.error(f"{weights}: no weights to score")
    overrides: dict[str, Any] = {}
    for item in args.set:  # run.py's override syntax: the value read as JSON, else a Python literal, else a string
        try:
            _, key, value = parse_override(item)
        except ValueError as e:
            p.error(f"--set: {e}")
        overrides[key] = value
    items = load_datalist(args.data, args.split)[:: max(1, args.every)]
    if not items:
        p.error(f"{args.data}: no labelled images in split {args.split!r}")
    post = Compose(_parser(bundle.path, args.data, overrides).get_parsed_content("postprocessing_transforms"))
    scribbles = None
    if args.scribbles:
        train_config = {**json.loads(bundle.config("train.json").read_text()), **overrides}
        try:
            scribbles = scribble_settings(train_config)
        except ValueError as e:
            p.error(f"--scribbles: {e}")
        from cellseg_monai.annotations.scribbles import simulate_scribbles
    rows = []
    for item in items:  # one image at a time: the raw outputs of large images are not all held at once
        kind = image_kind(read_image(item["image"]))
        if args.kinds and kind not in args.kinds:
            continue
        outputs, truths = predict(bundle.path, args.data, [item], weights, overrides)
        labels = np.asarray(post(dict(outputs[0]))["pred"]).reshape(truths[0].shape)
        rows.append(image_row(item["id"], kind, truths[0], labels))
        if scribbles is not None:
            rows[-1].update(scribble_fit(simulate_scribbles(truths[0], item["id"], **scribbles), labels))
    if not rows:
        p.error(f"no image of the kinds {args.kinds} in split {args.split!r}")
    name = args.name or bundle.name
    record = {
        "name": name,
        "bundle": bundle.name,
        "split": args.split,
        "command": "OMP_NUM_THREADS=1 python benchmarks/per_image.py " + shlex.join(argv),
        "machine_name": f"cpu{machine_info()['cores']}",
        "weights": str(weights),
        "overrides": overrides,
        "kinds": summarize(rows),
        "images": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}-{args.split}.json").write_text(json.dumps(record, indent=2) + "\n")
    text = _markdown(record, args.worst)
    (args.out / f"{name}-{args.split}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
