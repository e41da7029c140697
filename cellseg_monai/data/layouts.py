"""Dataset layouts → MONAI datalists.

A datalist is a list of dicts ``{"image": path, "label": path, "id": str, "scribble": path}`` ("label" and
"scribble" only when present). Three on-disk layouts are detected automatically:

(a) standard layout (the project's data contract)::

        <dataset>/images/<id>.tif   <dataset>/labels/<id>.tif   [<dataset>/split.json]   [<dataset>/weak/scribbles/<id>.*]

(b) Kaggle DSB2018 / BBBC038 folders: ``<dataset>/<id>/images/<id>.png`` with one binary PNG per nucleus in
    ``<dataset>/<id>/masks/`` (the label is the masks directory, read by :func:`~cellseg_monai.data.io.read_labels`);

(c) Cellpose pairs in one folder: ``<name>_img.<ext>`` and ``<name>_masks.<ext>`` (id = ``<name>``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from cellseg_monai.data.io import IMAGE_SUFFIXES, DataError, is_image_file

__all__ = ["SPLITS", "detect_layout", "list_images", "load_datalist", "split_ids"]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
"""Split names understood by :func:`load_datalist`."""

_CP_IMG, _CP_MASK = "_img", "_masks"


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem; two files with one stem (``a.tif`` and ``a.png``) are an error."""
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if not is_image_file(f):
            continue
        if f.stem in out:
            raise DataError(f"{folder}: two files share the id {f.stem!r} ({out[f.stem].name}, {f.name})")
        out[f.stem] = f
    return out


def _dsb_entries(root: Path) -> dict[str, dict[str, str]]:
    """DSB2018 entries ``<root>/<id>/images/<id>.<ext>`` (+ ``<root>/<id>/masks/``)."""
    out: dict[str, dict[str, str]] = {}
    for sub in sorted(d for d in root.iterdir() if d.is_dir() and (d / "images").is_dir()):
        images = _files_by_stem(sub / "images")
        if not images:
            continue
        img = images.get(sub.name, next(iter(images.values())))
        entry = {"image": str(img), "id": sub.name}
        if (sub / "masks").is_dir():
            entry["label"] = str(sub / "masks")
        out[sub.name] = entry
    return out


def _cellpose_entries(root: Path) -> dict[str, dict[str, str]]:
    """Cellpose entries ``<name>_img.<ext>`` (+ ``<name>_masks.<ext>``) in one folder."""
    files = [f for f in sorted(root.iterdir()) if is_image_file(f)]
    masks = {f.stem[: -len(_CP_MASK)]: f for f in files if f.stem.endswith(_CP_MASK)}
    out: dict[str, dict[str, str]] = {}
    for f in files:
        if f.stem.endswith(_CP_IMG):
            name = f.stem[: -len(_CP_IMG)]
            out[name] = {"image": str(f), "id": name}
            if name in masks:
                out[name]["label"] = str(masks[name])
    return out


def _standard_entries(root: Path) -> dict[str, dict[str, str]]:
    """Standard layout entries ``images/<id>.*`` (+ ``labels/<id>.*``)."""
    labels = _files_by_stem(root / "labels") if (root / "labels").is_dir() else {}
    out = {}
    for sid, img in _files_by_stem(root / "images").items():
        out[sid] = {"image": str(img), "id": sid}
        if sid in labels:
            out[sid]["label"] = str(labels[sid])
    return out


def detect_layout(dataset_dir: str | os.PathLike) -> str:
    """Name the layout of ``dataset_dir``: ``"standard"``, ``"dsb2018"`` or ``"cellpose"``.

    Raises:
        DataError: the folder does not exist or matches none of the layouts.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    if (root / "images").is_dir():
        return "standard"
    if any(d.is_dir() and (d / "images").is_dir() for d in root.iterdir()):
        return "dsb2018"
    if any(is_image_file(f) and f.stem.endswith(_CP_IMG) for f in root.iterdir()):
        return "cellpose"
    raise DataError(
        f"{root}: no known dataset layout found; expected images/<id>.tif (+ labels/<id>.tif), DSB2018 folders "
        f"<id>/images/<id>.png + <id>/masks/, or Cellpose pairs <name>_img.<ext> + <name>_masks.<ext>"
    )


def split_ids(ids: list[str], val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[str]]:
    """Deterministic train/val split of ``ids``.

    The sorted ids are permuted with ``numpy.random.default_rng(seed)``; the first ``round(val_fraction * n)``
    (at least 1 when ``0 < val_fraction`` and n >= 2) become "val", the rest "train". Both lists are returned sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(ids)
    n = len(ordered)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, max(n - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    val = sorted(ordered[i] for i in perm[:n_val])
    train = sorted(ordered[i] for i in perm[n_val:])
    return {"train": train, "val": val}


def _refuse_shared_ids(split_file: Path, table: dict[str, list]) -> None:
    """An image in two parts of ``split.json`` (train and val, val and test, ...) would be validated or tested on
    what it was trained on: refuse, naming the ids."""
    keys = list(table)
    for i, first in enumerate(keys):
        for second in keys[i + 1 :]:
            shared = sorted({str(x) for x in table[first]} & {str(x) for x in table[second]})
            if shared:
                raise DataError(
                    f"{split_file}: {len(shared)} id(s) in both {first!r} and {second!r}: "
                    f"{', '.join(shared[:5])}{' ...' if len(shared) > 5 else ''}; an image may be in one split only"
                )


def _select_split(root: Path, all_ids: list[str], split: str, val_fraction: float, seed: int) -> list[str]:
    """Ids of ``split``: from ``split.json`` when it lists the split, else derived by :func:`split_ids`."""
    if split == "all":
        return sorted(all_ids)
    split_file = root / "split.json"
    table: dict[str, list[str]] = {}
    if split_file.is_file():
        try:
            table = json.loads(split_file.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{split_file}: cannot parse split file ({exc})") from exc
        if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
            raise DataError(f'{split_file}: expected {{"train": [ids], "val": [ids], "test": [ids]}}')
        _refuse_shared_ids(split_file, table)
        known = set(all_ids)
        for key, ids in table.items():
            missing = [str(i) for i in ids if str(i) not in known]
            if missing:
                raise DataError(
                    f"{split_file}: split {key!r} names {len(missing)} id(s) with no image in {root}: "
                    f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
                )
    if split in table:
        return [str(i) for i in table[split]]
    if split == "test":
        raise DataError(f"{root}: no 'test' split (split.json absent or without a 'test' key); use split='all'")
    pool = sorted(set(all_ids) - {str(i) for i in table.get("test", [])})
    other = "val" if split == "train" else "train"
    if other in table:
        taken = {str(i) for i in table[other]}
        return [i for i in pool if i not in taken]
    return split_ids(pool, val_fraction=val_fraction, seed=seed)[split]


LABELS_OR = (None, "scribble", "points")
"""What ``load_datalist(labels_or=...)`` accepts in place of an image's labels."""


def load_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    require_labels: bool = True,
    val_fraction: float = 0.2,
    seed: int = 0,
    labels_or: str | None = None,
) -> list[dict[str, str]]:
    """Build the datalist of one split of a dataset folder (layout detected by :func:`detect_layout`).

    Args:
        dataset_dir: dataset folder in the standard, DSB2018 or Cellpose layout.
        split: "train", "val", "test" or "all". Taken from ``split.json`` when it lists the split; otherwise
            "train"/"val" are derived deterministically by :func:`split_ids` from the ids not listed as "test"
            (or as the complement of the listed other split); "all" returns every image.
        require_labels: raise when an image of the split has no label.
        val_fraction: fraction of ids in "val" when the split is derived.
        seed: seed of the derived split.
        labels_or: with ``require_labels``, an image may have user-made weak labels instead of labels:
            ``"scribble"`` (``weak/scribbles/<id>.*``, ImPartial) or ``"points"`` (``weak/points/<id>.csv``, LACSS
            with ``points_source`` "files") — a bundle then trains and validates on what a user drew, with no full
            labels at all (metrics that need labels skip such images).

    Returns:
        Dicts ``{"image": path, "id": stem, "label": path (when present), "scribble": path (when
        ``weak/scribbles/<id>.*`` exists)}``, in ``split.json`` order or sorted by id.

    Raises:
        DataError: unknown layout, an image without label when labels are required, ``split.json`` naming a
            missing id, or an empty split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if labels_or not in LABELS_OR:
        raise ValueError(f"labels_or must be one of {LABELS_OR}, got {labels_or!r}")
    root = Path(dataset_dir)
    layout = detect_layout(root)
    entries = {"standard": _standard_entries, "dsb2018": _dsb_entries, "cellpose": _cellpose_entries}[layout](root)
    if not entries:
        raise DataError(f"{root}: no images found ({layout} layout; suffixes {', '.join(IMAGE_SUFFIXES)})")
    ids = _select_split(root, list(entries), split, val_fraction, seed)
    if not ids:
        raise DataError(f"{root}: split {split!r} is empty")
    scribbles = _files_by_stem(root / "weak" / "scribbles") if (root / "weak" / "scribbles").is_dir() else {}
    out: list[dict[str, str]] = []
    for sid in ids:
        entry = dict(entries[sid])
        if sid in scribbles:
            entry["scribble"] = str(scribbles[sid])
        weak_instead = (labels_or == "scribble" and "scribble" in entry) or (
            labels_or == "points" and (root / "weak" / "points" / f"{sid}.csv").is_file()
        )
        if require_labels and "label" not in entry and not weak_instead:
            where = {"standard": "labels/<id>.*", "dsb2018": "<id>/masks/", "cellpose": "<name>_masks.<ext>"}[layout]
            instead = {
                "scribble": " or scribbles (weak/scribbles/<id>.*)",
                "points": " or points (weak/points/<id>.csv)",
            }
            instead = instead.get(labels_or, "")
            raise DataError(f"{entry['image']}: image {sid!r} has no label ({where}){instead} and labels are required")
        out.append(entry)
    n_user = sum("scribble" in e for e in out)
    if n_user:
        logger.warning(
            "%s: %d of %d %s images have scribbles in weak/scribbles/; they are used as drawn and replace the "
            "simulated ones (annotation_budget does not apply to them)",
            root,
            n_user,
            len(out),
            split,
        )
    return out


def list_images(path: str | os.PathLike) -> list[dict[str, str]]:
    """List the images to run inference on.

    Args:
        path: a single image file, a dataset folder (standard, DSB2018 or Cellpose layout), or a plain folder of
            images.

    Returns:
        Dicts ``{"image": path, "id": stem}`` sorted by id.

    Raises:
        DataError: the path does not exist or holds no image.
    """
    p = Path(path)
    if p.is_file():
        if not is_image_file(p):
            raise DataError(f"{p}: not an image file (suffixes {', '.join(IMAGE_SUFFIXES)})")
        return [{"image": str(p), "id": p.stem}]
    if not p.is_dir():
        raise DataError(f"{p}: no such file or folder")
    try:
        layout = detect_layout(p)
    except DataError:
        layout = "plain"
    if layout == "standard":
        entries = _standard_entries(p)
    elif layout == "dsb2018":
        entries = _dsb_entries(p)
    elif layout == "cellpose":
        entries = _cellpose_entries(p)
    else:
        entries = {sid: {"image": str(f), "id": sid} for sid, f in _files_by_stem(p).items()}
    if not entries:
        raise DataError(f"{p}: no images found (suffixes {', '.join(IMAGE_SUFFIXES)})")
    return [{"image": entries[sid]["image"], "id": sid} for sid in sorted(entries)]
