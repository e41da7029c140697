"""Simulate weak annotations for a whole dataset and write them as files (``<dataset>/weak/<kind>/...``).

The written files are read back like user-made annotations (data contract, ``shared/DESIGN.md``), so a simulated
benchmark and a real weakly annotated dataset go through the same pipeline. The CLI ``cellseg-monai simulate``
calls :func:`simulate_dataset`. Every kind is a deterministic function of (image id, seed, budget).

=========  ======================================  ===========================================================
kind       written                                 method
=========  ======================================  ===========================================================
scribbles  ``weak/scribbles/<id>.tif`` (uint8)     ImPartial protocol, ``budget`` objects (int) or fraction
masks      ``weak/masks/<id>.tif`` (uint8 0/1)     foreground mask of the full labels (canonical shape, LACSS)
counts     ``weak/counts.json``                    ``{"<id>": K}``, K = objects in the image (canonical shape)
partial    ``weak/partial/<id>.tif`` (uint16/32)   instance labels of a seeded ``budget`` fraction of the
                                                   objects (partial Mask R-CNN; the rest are unlabelled)
points     ``weak/points/<id>.csv`` (y,x)          one point per object: its centroid (LACSS LOIs)
=========  ======================================  ===========================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cellseg_monai.annotations.foreground_count import count_instances, simulate_foreground_count
from cellseg_monai.annotations.partial import keep_fraction
from cellseg_monai.annotations.points import simulate_points, write_points_csv
from cellseg_monai.annotations.scribbles import simulate_scribbles
from cellseg_monai.data.io import read_labels
from cellseg_monai.data.layouts import load_datalist

__all__ = ["SIMULATED_KINDS", "simulate_dataset"]


def _write_tif(path: Path, array: np.ndarray) -> str:
    import tifffile

    if array.dtype in (np.uint8, np.uint16, np.uint32):  # instance labels keep their width (write_labels' choice)
        tifffile.imwrite(str(path), array, compression="zlib")
    else:
        tifffile.imwrite(str(path), array.astype(np.uint8), compression="zlib")
    return str(path)


def _scribbles(labels: np.ndarray, image_id: str, seed: int, budget: int | float, fov: int) -> np.ndarray:
    return simulate_scribbles(labels, image_id, seed=seed, budget=budget, fov=fov)


def _mask(labels: np.ndarray, image_id: str, seed: int, budget: int | float, fov: int) -> np.ndarray:
    return simulate_foreground_count(labels)[0]


def _partial(labels: np.ndarray, image_id: str, seed: int, budget: int | float, fov: int) -> np.ndarray:
    if not isinstance(budget, float) or not 0.0 < budget <= 1.0:
        raise ValueError(f"partial labels need a fraction budget in (0, 1] (e.g. 0.25); got {budget!r}")
    kept = keep_fraction(labels, image_id, seed=seed, fraction=budget)
    return kept.astype(np.uint16 if kept.max(initial=0) < 65536 else np.uint32)


#: kind -> per-image simulator (labels, id, seed, budget, fov) -> (H, W) label image written as <id>.tif
_IMAGE_KINDS: dict[str, Callable[..., np.ndarray]] = {"scribbles": _scribbles, "masks": _mask, "partial": _partial}
#: kind -> per-image value gathered into one JSON file <out_dir>/<kind>.json (out_dir default <dataset>/weak)
_JSON_KINDS: dict[str, Callable[[np.ndarray], int]] = {"counts": count_instances}

SIMULATED_KINDS: tuple[str, ...] = (*_IMAGE_KINDS, *_JSON_KINDS, "points")
"""Kinds of weak annotation :func:`simulate_dataset` writes."""


def simulate_dataset(
    dataset_dir: str | os.PathLike,
    kind: str = "scribbles",
    budget: int | float = 0.3,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    split: str = "all",
    fov: int = 32,
) -> list[str]:
    """Write simulated weak labels for every labelled image of a dataset split.

    Args:
        dataset_dir: dataset with full instance labels (any layout of :func:`load_datalist`).
        kind: one of :data:`SIMULATED_KINDS` (table in the module docstring).
        budget: scribbles: objects per image, an int, or a float in (0, 1] = fraction of each image's objects;
            partial: the fraction of each image's objects kept. Not used by masks and counts.
        seed: seed; the annotation of an image is a function of (id, seed, budget).
        out_dir: output folder; default ``<dataset_dir>/weak/<kind>`` (image kinds) or ``<dataset_dir>/weak``
            (``counts.json``).
        split: "train", "val", "test" or "all".
        fov: field of view of the scribble protocol (pixels).

    Returns:
        Paths written: ``<out_dir>/<id>.tif`` per image (zlib TIFF), ``<out_dir>/<id>.csv`` (points), or the one
        JSON file.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in SIMULATED_KINDS:
        raise ValueError(f"kind must be one of {SIMULATED_KINDS}, got {kind!r}")
    items = load_datalist(dataset_dir, split=split, require_labels=True)
    if kind in _JSON_KINDS:
        out = Path(out_dir) if out_dir is not None else Path(dataset_dir) / "weak"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{kind}.json"
        values = {item["id"]: _JSON_KINDS[kind](read_labels(item["label"])) for item in items}
        path.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
        return [str(path)]
    out = Path(out_dir) if out_dir is not None else Path(dataset_dir) / "weak" / kind
    out.mkdir(parents=True, exist_ok=True)
    if kind == "points":
        return [
            str(
                write_points_csv(
                    out / f"{item['id']}.csv", simulate_points(read_labels(item["label"]), item["id"], seed)
                )
            )
            for item in items
        ]
    simulate = _IMAGE_KINDS[kind]
    return [
        _write_tif(out / f"{item['id']}.tif", simulate(read_labels(item["label"]), item["id"], seed, budget, fov))
        for item in items
    ]
