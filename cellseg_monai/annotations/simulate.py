"""Simulate weak annotations for a whole dataset and write them as files (``<dataset>/weak/<kind>/...``).

The written files are read back like user-made annotations (data contract, ``docs/architecture.md``), so a simulated
benchmark and a real weakly annotated dataset go through the same pipeline. The CLI ``cellseg-monai simulate``
calls :func:`simulate_dataset`. Every kind is a deterministic function of (image id, seed, budget).

Nothing a user made is replaced: every file is written atomically, and a run refuses (``OverwriteError``) to write
into a folder or over a file that ``simulate`` did not write itself (:mod:`cellseg_monai.annotations.manifest`).

=========  ======================================  ===========================================================
kind       written                                 method
=========  ======================================  ===========================================================
scribbles  ``weak/scribbles/<id>.tif`` (uint8)     ImPartial protocol, ``budget`` objects (int) or fraction
masks      ``weak/masks/<id>.tif`` (uint8 0/1)     foreground mask of the full labels (canonical shape, LACSS)
counts     ``weak/counts.json``                    ``{"<id>": K}``, K = objects in the image (canonical shape)
partial    ``weak/partial/<id>.tif`` (uint16/32)   instance labels of a seeded ``budget`` fraction of the
                                                   objects (partial Mask R-CNN; the rest are unlabelled)
points     ``weak/points/<id>.csv`` (y,x)          one point per clicked object: its centroid (LACSS LOIs); a
                                                   seeded ``budget`` fraction of the objects (default 1.0: all)
=========  ======================================  ===========================================================
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from cellseg_monai.annotations.foreground_count import count_instances, simulate_foreground_count
from cellseg_monai.annotations.manifest import SimulationManifest
from cellseg_monai.annotations.partial import keep_fraction
from cellseg_monai.annotations.points import simulate_points, write_points_csv
from cellseg_monai.annotations.scribbles import budget_count, simulate_scribbles
from cellseg_monai.data.io import atomic_path, read_labels
from cellseg_monai.data.layouts import load_datalist

__all__ = ["DEFAULT_BUDGETS", "SIMULATED_KINDS", "simulate_dataset"]


def _write_tif(path: Path, array: np.ndarray) -> None:
    import tifffile

    if array.dtype not in (np.uint8, np.uint16, np.uint32):  # instance labels keep their width (write_labels' choice)
        array = array.astype(np.uint8)
    tifffile.imwrite(str(path), array, compression="zlib")


def _scribbles(labels: np.ndarray, image_id: str, seed: int, budget: int | float, fov: int) -> np.ndarray:
    return simulate_scribbles(labels, image_id, seed=seed, budget=budget, fov=fov)


def _mask(labels: np.ndarray, image_id: str, seed: int, budget: int | float, fov: int) -> np.ndarray:
    return simulate_foreground_count(labels)[0]


def _partial(labels: np.ndarray, image_id: str, seed: int, budget: int | float, fov: int) -> np.ndarray:
    kept = keep_fraction(labels, image_id, seed=seed, fraction=budget)
    return kept.astype(np.uint16 if kept.max(initial=0) < 65536 else np.uint32)


#: kind -> per-image simulator (labels, id, seed, budget, fov) -> (H, W) label image written as <id>.tif
_IMAGE_KINDS: dict[str, Callable[..., np.ndarray]] = {"scribbles": _scribbles, "masks": _mask, "partial": _partial}
#: kind -> per-image value gathered into one JSON file <out_dir>/<kind>.json (out_dir default <dataset>/weak)
_JSON_KINDS: dict[str, Callable[[np.ndarray], int]] = {"counts": count_instances}
#: kind -> the arguments its output depends on (recorded per file; a re-run with other values needs overwrite)
_SETTINGS: dict[str, tuple[str, ...]] = {
    "scribbles": ("seed", "budget", "fov"),
    "masks": (),
    "partial": ("seed", "budget"),
    "counts": (),
    "points": ("seed", "budget"),
}
#: kind -> its ``budget`` when none is given
DEFAULT_BUDGETS: dict[str, int | float | None] = {
    "scribbles": 0.3,
    "masks": None,
    "partial": 0.3,
    "counts": None,
    "points": 1.0,
}

SIMULATED_KINDS: tuple[str, ...] = (*_IMAGE_KINDS, *_JSON_KINDS, "points")
"""Kinds of weak annotation :func:`simulate_dataset` writes."""


def _check_settings(kind: str, budget: int | float, fov: int) -> None:
    """Refuse a budget or field of view that ``kind`` cannot use, before anything is read or written."""
    if kind not in SIMULATED_KINDS:
        raise ValueError(f"kind must be one of {SIMULATED_KINDS}, got {kind!r}")
    if kind == "scribbles":
        budget_count(budget, 0)  # raises for a negative int, a float outside (0, 1] or a non-number
        if isinstance(fov, bool) or not isinstance(fov, int) or fov < 1:
            raise ValueError(f"fov must be a positive number of pixels, got {fov!r}")
    if kind in ("partial", "points") and (not isinstance(budget, float) or not 0.0 < budget <= 1.0):
        raise ValueError(f"{kind} labels need a fraction budget in (0, 1] (e.g. 0.25); got {budget!r}")


@contextlib.contextmanager
def _quiet_layout_log() -> Iterator[None]:
    """Silence the dataset reader's note that weak/scribbles/ are "used as drawn": simulate does not train on them."""
    log = logging.getLogger("cellseg_monai.data.layouts")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _write_one(kind: str, path: Path, item: dict[str, str], seed: int, budget: int | float, fov: int) -> None:
    """Simulate the weak label of one datalist item and write it atomically to ``path``."""
    labels = read_labels(item["label"])
    with atomic_path(path) as tmp:
        if kind == "points":
            write_points_csv(tmp, simulate_points(labels, item["id"], seed, fraction=budget))
        else:
            _write_tif(tmp, _IMAGE_KINDS[kind](labels, item["id"], seed, budget, fov))


def simulate_dataset(
    dataset_dir: str | os.PathLike,
    kind: str = "scribbles",
    budget: int | float | None = None,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    split: str = "all",
    fov: int = 32,
    overwrite: bool = False,
) -> list[str]:
    """Write simulated weak labels for every labelled image of a dataset split.

    Args:
        dataset_dir: dataset with full instance labels (any layout of :func:`load_datalist`).
        kind: one of :data:`SIMULATED_KINDS` (table in the module docstring).
        budget: scribbles: objects per image, an int, or a float in (0, 1] = fraction of each image's objects;
            partial: the fraction of each image's objects kept; points: the fraction of each image's objects
            clicked (the objects partial keeps at the same fraction and seed, and the ones LACSS's
            ``annotation_budget`` simulates). Not used by masks and counts. None: :data:`DEFAULT_BUDGETS`
            (0.3 for scribbles and partial, 1.0 for points).
        seed: seed; the annotation of an image is a function of (id, seed, budget).
        out_dir: output folder; default ``<dataset_dir>/weak/<kind>`` (image kinds) or ``<dataset_dir>/weak``
            (``counts.json``).
        split: "train", "val", "test" or "all".
        fov: field of view of the scribble protocol (pixels).
        overwrite: replace files that an earlier ``simulate`` run wrote with other settings. Files that
            ``simulate`` did not write (a user's weak labels) are never replaced.

    Returns:
        Paths written: ``<out_dir>/<id>.tif`` per image (zlib TIFF), ``<out_dir>/<id>.csv`` (points), or the one
        JSON file.

    Raises:
        ValueError: an unknown kind, or a budget or fov the kind cannot use (checked before anything is read).
        OverwriteError: the output folder (image and points kinds) or the JSON file holds files that ``simulate``
            did not write, or that it wrote with other settings and ``overwrite`` is False; nothing is written.
    """
    if budget is None:
        budget = DEFAULT_BUDGETS.get(kind)  # an unknown kind is refused just below
    if isinstance(budget, int) and not isinstance(budget, bool) and kind == "points" and budget == 1:
        budget = 1.0  # "--budget 1": every object
    _check_settings(kind, budget, fov)
    arguments = {"seed": seed, "budget": budget, "fov": fov}
    settings = {"kind": kind, **{name: arguments[name] for name in _SETTINGS[kind]}}
    per_image = kind not in _JSON_KINDS
    default_out = Path(dataset_dir) / "weak" / (kind if per_image else "")
    out = Path(out_dir) if out_dir is not None else default_out
    manifest = SimulationManifest(out)
    with _quiet_layout_log():
        items = load_datalist(dataset_dir, split=split, require_labels=True)
    suffix = ".csv" if kind == "points" else ".tif"
    names = [f"{kind}.json"] if not per_image else [item["id"] + suffix for item in items]
    manifest.check_replaceable(names, settings, overwrite, whole_folder=per_image)
    manifest.begin(names, settings)
    if not per_image:
        by_id = {item["id"]: _JSON_KINDS[kind](read_labels(item["label"])) for item in items}
        with atomic_path(out / names[0]) as tmp:
            tmp.write_text(json.dumps(by_id, indent=1, sort_keys=True) + "\n")
    else:
        for item, name in zip(items, names, strict=True):
            _write_one(kind, out / name, item, seed, budget, fov)
    manifest.finish(names)
    return [str(out / name) for name in names]
