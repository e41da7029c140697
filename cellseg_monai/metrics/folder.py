"""Evaluate a folder of predicted instance label images against a folder of GT label images.

Both folders hold ``<id>.tif`` (or ``.tiff``) instance label images (H, W) (integer, 0 = background), the data
contract's ``labels/`` layout. GT ids drive the list: a GT image without a prediction is scored against an empty
prediction and listed under ``"missing"``; predictions without GT are ignored.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from cellseg_monai.data.io import DataError
from cellseg_monai.metrics.instance import DEFAULT_NAMES, evaluate_pairs
from cellseg_monai.metrics.matching import as_label_image

__all__ = [
    "LABEL_SUFFIXES",
    "SCORED_NAMES",
    "evaluate_folders",
    "format_table",
    "json_safe",
    "list_label_files",
    "read_scores",
]

LABEL_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")


def list_label_files(folder: str | os.PathLike) -> dict[str, Path]:
    """``{id: path}`` of the ``<id>.tif`` / ``<id>.tiff`` files in ``folder``, sorted by id.

    Raises:
        DataError: the folder does not exist, or holds the same id twice (``a.tif`` and ``a.tiff``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES:
            if p.stem in out:
                raise DataError(f"{p}: id {p.stem!r} appears twice ({out[p.stem].name} and {p.name})")
            out[p.stem] = p
    return dict(sorted(out.items()))


def _read(path: Path) -> np.ndarray:
    try:
        arr = tifffile.imread(path)
    except Exception as e:  # tifffile raises several types for corrupt files
        raise DataError(f"{path}: cannot read as TIFF ({e})") from e
    try:
        return as_label_image(arr, str(path))
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: not an instance label image (H, W): {e}") from e


def json_safe(x: Any) -> Any:
    """``x`` with every non-finite float replaced by ``None`` (JSON has no NaN) and tuples / paths made plain."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


SCORED_NAMES: tuple[str, ...] = ("ap@0.5", "ap@0.75", "mAP", "coco_ap", "coco_ap50", "coco_ap75")


def read_scores(path: str | os.PathLike) -> dict[int, float]:
    """``{object id: score}`` from a per-object CSV with ``id`` and ``score`` columns (bundle inference output)."""
    import csv

    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {int(float(r["id"])): float(r["score"]) for r in rows}
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: cannot read per-object scores (needs columns id, score): {e}") from e


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    json_path: str | os.PathLike | None = None,
    names: Iterable[str] = DEFAULT_NAMES,
    scores: bool | None = None,
) -> dict[str, Any]:
    """Instance metrics of every ``<id>.tif`` in ``gt_dir`` against ``pred_dir/<id>.tif``.

    Args:
        pred_dir: folder of predicted instance label images.
        gt_dir: folder of GT instance label images; its ids define the evaluated set.
        json_path: if given, the result is also written there as JSON (NaN written as null).
        names: metric names (see :mod:`cellseg_monai.metrics.instance`); the default set has ``f1@0.5``,
            ``precision@0.5``, ``recall@0.5``, ``fnr@0.5``, ``ap_dsb@0.5``, ``ap_dsb@0.75``, ``ap_dsb_mean``,
            ``f1_mean``, ``fnr_mean``, ``aji``, ``pq``, ``sq``, ``rq``, ``mdice``, ``miou`` and ``f1@0.1 ... f1@1.0``.
        scores: read per-object scores from ``pred_dir/<id>.csv`` (the per-object measurements that bundle
            inference writes: columns ``id`` and ``score``) and add the score-ranked metrics :data:`SCORED_NAMES`
            (LACSS ``ap@t`` / ``mAP``, COCO mask AP). ``None``: when every existing prediction has its CSV.

    Returns:
        ``{"per_image_mean": {name: float}, "pooled": {name: float}, "per_image": [{"id": str, name: float, ...}],
        "missing": [id, ...]}``; pooled values sum TP / FP / FN (etc.) over all images before the formula.

    Raises:
        DataError: a folder is missing, ``gt_dir`` holds no label image, or a file cannot be read as labels.
        ValueError: (``DataError``) a prediction's height / width differs from its GT; the message names the file.
    """
    gt_files = list_label_files(gt_dir)
    if not gt_files:
        raise DataError(f"{gt_dir}: no label images ({', '.join(LABEL_SUFFIXES)}) found")
    pred_files = list_label_files(pred_dir)
    names = list(names)
    missing: list[str] = []
    if scores is None:
        scores = bool(pred_files) and all(p.with_suffix(".csv").is_file() for p in pred_files.values())
    if scores:
        names += [n for n in SCORED_NAMES if n not in names]

    def pairs() -> Iterator[tuple[Any, ...]]:
        for image_id, gt_path in gt_files.items():
            gt = _read(gt_path)
            pred_path = pred_files.get(image_id)
            if pred_path is None:
                missing.append(image_id)
                pred = np.zeros_like(gt)
            else:
                pred = _read(pred_path)
                if pred.shape != gt.shape:
                    raise DataError(
                        f"{pred_path}: prediction is {pred.shape[0]}x{pred.shape[1]} (H x W) but its GT {gt_path}"
                        f" is {gt.shape[0]}x{gt.shape[1]}"
                    )
            if scores:
                yield gt, pred, (read_scores(pred_path.with_suffix(".csv")) if pred_path is not None else {})
            else:
                yield gt, pred

    res = evaluate_pairs(pairs(), names=names)
    result = {
        "per_image_mean": res["per_image_mean"],
        "pooled": res["pooled"],
        "per_image": [{"id": i, **row} for i, row in zip(gt_files, res["per_image"], strict=True)],
        "missing": missing,
    }
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(json_safe(result), indent=2) + "\n")
    return result


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of ``result`` (from :func:`evaluate_folders` or ``evaluate_pairs``) for printing.

    One row per metric with its per-image mean and pooled value (4 decimals), then the number of images and the
    missing predictions.
    """
    mean, pooled = result.get("per_image_mean", {}), result.get("pooled", {})
    rows = list(dict.fromkeys([*mean, *pooled]))
    width = max([len("metric"), *(len(r) for r in rows)])

    def fmt(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    lines = [f"{'metric':<{width}}  {'per-image mean':>14}  {'pooled':>8}", "-" * (width + 26)]
    lines += [f"{r:<{width}}  {fmt(mean.get(r)):>14}  {fmt(pooled.get(r)):>8}" for r in rows]
    lines.append(f"images: {len(result.get('per_image', []))}")
    missing = result.get("missing")
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        lines.append(f"missing predictions (scored as empty): {shown}")
    return "\n".join(lines)
