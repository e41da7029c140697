"""Labels saved from a viewer (MONAI Label's datastore, a QuPath export, ...) as a training dataset of a bundle.

A viewer saves one label image per image, and what its values mean depends on what the bundle learns from:

==============  =====================================================  ============================================
kind            the label image the annotator saves                    written to the dataset as
==============  =====================================================  ============================================
``scribbles``   0 unlabelled, 1 background, 2.. foreground classes     ``weak/scribbles/<id>.tif`` (ImPartial; no
                (strokes, a few per image)                             ``labels/`` needed)
``instances``   instance ids, 0 background (or unlabelled, for the     ``labels/<id>.tif``; a 0/1 (or 0/255) mask is
                bundles that learn from a subset of outlined nuclei)   split into its connected components
``points``      a dot per cell: value 2.. (each connected blob one     ``weak/points/<id>.csv`` (blob centroids, y,x)
                cell); value 1 is ignored, so scribbles (1             (LACSS; its foreground mask then comes from a
                background, 2 a stroke in a cell) serve as well        threshold of the image)
==============  =====================================================  ============================================

:func:`write_training_dataset` lays the pairs out in the standard layout (:mod:`cellseg_monai.data.layouts`):
``images/<id>.<ext>`` (links to the viewer's images, copies where links are not possible), the labels as above,
and a ``split.json`` whose ``val`` part is a seeded ``val_fraction`` of the images (at least one, and never all).
A single annotated image is trained on and also validated on, as ``<id>-val`` (the same image and annotation):
with nothing else to check a model against, the best epoch is then the one that fits the annotation best.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from cellseg_monai.annotations.points import write_points_csv
from cellseg_monai.annotations.scribbles import BACKGROUND, read_scribbles
from cellseg_monai.data.io import DataError, read_image, read_labels, write_labels

__all__ = ["SINGLE_VAL_SUFFIX", "VIEWER_KINDS", "points_from_viewer", "viewer_labels", "write_training_dataset"]

VIEWER_KINDS = ("scribbles", "instances", "points")
POINT_VALUE = 2
"""``points`` labels: each connected blob of values >= 2 is one cell's dot (1, background in scribbles, is ignored)."""
SINGLE_VAL_SUFFIX = "-val"
"""With a single annotated image, its validation copy is ``<id>-val`` (the same image and annotation)."""

logger = logging.getLogger(__name__)


def viewer_labels(path: str | os.PathLike, kind: str) -> np.ndarray | None:
    """Read one saved label image as ``kind``; None when it holds no annotation (all 0), which is skipped.
    ``points``: the label image itself (values 0, 1, 2..), checked; :func:`points_from_viewer` reads it.

    Raises:
        DataError: naming the file: unreadable, not a label image, or (``scribbles``) values out of range.
    """
    if kind not in VIEWER_KINDS:
        raise ValueError(f"kind must be one of {VIEWER_KINDS}, got {kind!r}")
    if kind == "scribbles":
        scribbles = read_scribbles(path)
        return scribbles if np.any(scribbles >= BACKGROUND) else None
    labels = read_labels(path)
    if kind == "points":
        return labels if np.any(labels >= POINT_VALUE) else None
    values = np.unique(labels)
    if values.size == 1 and values[0] == 0:
        return None
    if values.size == 2 and values[0] == 0:  # one value: a mask (0/1, 0/255) or one outlined nucleus
        labels, _ = ndimage.label(labels > 0)
    return labels


def points_from_viewer(labels: np.ndarray) -> np.ndarray:
    """``points`` label image → (K, 2) y, x: for each dot (connected blob of values >= 2), its pixel nearest the
    blob's centroid (a curved stroke's centroid may lie outside the stroke, even outside the cell)."""
    blobs, k = ndimage.label(labels >= POINT_VALUE)
    if k == 0:
        return np.zeros((0, 2), np.float64)
    centroids = np.asarray(ndimage.center_of_mass(np.ones_like(blobs), blobs, range(1, k + 1)), np.float64)
    ys, xs = np.nonzero(blobs)
    ids = blobs[ys, xs] - 1
    dist = (ys - centroids[ids, 0]) ** 2 + (xs - centroids[ids, 1]) ** 2
    order = np.lexsort((dist, ids))  # by blob, nearest first
    first = order[np.r_[0, np.flatnonzero(np.diff(ids[order])) + 1]]
    return np.stack([ys[first], xs[first]], axis=1).astype(np.float64)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_training_dataset(
    pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    out_dir: str | os.PathLike,
    kind: str,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Write ``(image, saved label)`` pairs as a dataset in the standard layout; returns its split.

    Args:
        pairs: image file and the label image saved for it; the image id is the image's file stem.
        out_dir: a new or empty folder.
        kind: ``"scribbles"``, ``"instances"`` or ``"points"`` (see the module docstring).
        val_fraction: fraction of the annotated images held out for validation (at least one).
        seed: seed of the split.

    Raises:
        DataError: ``out_dir`` is not empty, a label file is bad (named), two images share an id, or no pair
            holds an annotation.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: not empty; a training dataset is written into a new folder")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    annotated: dict[str, tuple[Path, np.ndarray]] = {}
    for image, label in pairs:
        image_id = Path(image).stem
        if image_id in annotated:
            raise DataError(f"{image}: a second image with id {image_id!r}; image ids (file stems) must be unique")
        values = viewer_labels(label, kind)
        if values is None:
            logger.warning("%s: holds no annotation (all 0), skipped", label)
            continue
        size = read_image(image).shape[:2]
        if values.shape != size:
            raise DataError(f"{label}: label has height x width {values.shape} but image {image} has {size}")
        annotated[image_id] = (Path(image), values)
    if not annotated:
        raise DataError(f"none of the {len(pairs)} saved labels holds an annotation (all are 0)")
    (out / "images").mkdir(parents=True, exist_ok=True)
    for image_id, (image, values) in annotated.items():
        _link_or_copy(image, out / "images" / f"{image_id}{image.suffix}")
        _write_annotation(out, image_id, kind, values)
    ids = sorted(annotated)
    if len(ids) == 1:  # validate on the one image too, under its own id (an id is in one split only)
        (only,) = ids
        image, values = annotated[only]
        _link_or_copy(image, out / "images" / f"{only}{SINGLE_VAL_SUFFIX}{image.suffix}")
        _write_annotation(out, f"{only}{SINGLE_VAL_SUFFIX}", kind, values)
        split = {"train": ids, "val": [f"{only}{SINGLE_VAL_SUFFIX}"]}
    else:
        order = np.random.default_rng(seed).permutation(len(ids))
        n_val = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
        val = sorted(ids[i] for i in order[:n_val])
        split = {"train": [i for i in ids if i not in val], "val": val}
    (out / "split.json").write_text(json.dumps(split, indent=2) + "\n")
    return split


def _write_annotation(out: Path, image_id: str, kind: str, values: np.ndarray) -> None:
    if kind == "scribbles":
        write_labels(out / "weak" / "scribbles" / f"{image_id}.tif", values)
    elif kind == "instances":
        write_labels(out / "labels" / f"{image_id}.tif", values)
    else:
        write_points_csv(out / "weak" / "points" / f"{image_id}.csv", points_from_viewer(values))
