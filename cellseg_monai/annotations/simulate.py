"""Simulate weak annotations for a whole dataset and write them as files (``<dataset>/weak/<kind>/<id>.tif``).

The written files are read back like user-made annotations (:func:`cellseg_monai.data.layouts.load_datalist` puts
``weak/scribbles/<id>.*`` under the "scribble" key), so a simulated benchmark and a real weakly annotated dataset
go through the same pipeline. The CLI ``cellseg-monai simulate`` calls :func:`simulate_dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cellseg_monai.annotations.scribbles import simulate_scribbles
from cellseg_monai.data.io import read_labels
from cellseg_monai.data.layouts import load_datalist

__all__ = ["PLANNED_KINDS", "SIMULATED_KINDS", "simulate_dataset"]

SIMULATED_KINDS: tuple[str, ...] = ("scribbles",)
"""Kinds of weak annotation :func:`simulate_dataset` writes."""
PLANNED_KINDS: tuple[str, ...] = ("points", "masks", "counts", "partial")
"""Kinds described by the data contract whose simulation is not implemented here yet."""


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
        kind: "scribbles" (ImPartial protocol, :func:`~cellseg_monai.annotations.scribbles.simulate_scribbles`).
        budget: objects per image: an int, or a float in (0, 1] = fraction of each image's objects.
        seed: seed; the annotation of an image is a function of (id, seed, budget).
        out_dir: output folder; default ``<dataset_dir>/weak/<kind>``.
        split: "train", "val", "test" or "all".
        fov: field of view of the scribble protocol (pixels).

    Returns:
        Paths written (``<out_dir>/<id>.tif``, ``uint8`` zlib TIFF: 0 unlabelled, 1 background, 2.. classes).

    Raises:
        NotImplementedError: a kind of the data contract not implemented yet (points, masks, counts, partial).
        ValueError: an unknown kind.
    """
    if kind in PLANNED_KINDS:
        raise NotImplementedError(f"simulating {kind!r} is not implemented yet; available: {SIMULATED_KINDS}")
    if kind not in SIMULATED_KINDS:
        raise ValueError(f"kind must be one of {SIMULATED_KINDS + PLANNED_KINDS}, got {kind!r}")
    import tifffile

    out = Path(out_dir) if out_dir is not None else Path(dataset_dir) / "weak" / kind
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for item in load_datalist(dataset_dir, split=split, require_labels=True):
        labels = read_labels(item["label"])
        scribbles = simulate_scribbles(labels, item["id"], seed=seed, budget=budget, fov=fov)
        path = out / f"{item['id']}.tif"
        tifffile.imwrite(str(path), scribbles.astype(np.uint8), compression="zlib")
        written.append(str(path))
    return written
