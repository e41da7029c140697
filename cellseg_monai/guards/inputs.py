"""What a command reads: the folders it must never write into, and which input images can actually be read."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cellseg_monai.data.io import DataError

__all__ = ["DATASET_FOLDERS", "protected_folders", "screen_images"]

DATASET_FOLDERS: tuple[str, ...] = ("images", "labels", "weak", "masks")
"""Folders of a dataset (standard layout; ``masks`` for DSB2018) that hold data a user made."""


def protected_folders(input_path: str | os.PathLike, datalist: Sequence[Mapping[str, str]]) -> list[Path]:
    """Folders whose contents must not change, resolved (symlinks followed): outputs may not go into, below or
    around them (:func:`~cellseg_monai.guards.outputs.check_output_dir`).

    Args:
        input_path: what the user gave: an image file, a folder of images or a dataset folder.
        datalist: the images found there (``{"image": path, ...}``, :func:`cellseg_monai.data.list_images`).

    Returns:
        For a folder: the folder and the folder of every image in it; for any input, the :data:`DATASET_FOLDERS`
        of the dataset around it (a folder holding ``images/``). Sorted. (A single image file protects only its
        dataset's folders: its own folder may hold an output folder, but may not be one, see ``check_output_dir``.)
    """
    given = Path(input_path).resolve()
    folders: set[Path] = set()
    if given.is_dir():
        folders |= {given} | {Path(entry["image"]).resolve().parent for entry in datalist}
    candidates = folders | {given.parent}
    roots = {f.parent for f in candidates if f.name == "images"} | ({given} if (given / "images").is_dir() else set())
    folders |= {root / name for root in roots for name in DATASET_FOLDERS}
    return sorted(folders)


def screen_images(
    datalist: Sequence[Mapping[str, str]], channels: int | None = None
) -> tuple[list[dict[str, str]], list[str]]:
    """Read every image of a datalist once, as inference will, and set aside those that cannot be read or hold NaN
    or infinite values (which would stop the run half way through the batch).

    Args:
        datalist: ``{"image": path, "id": id}`` entries.
        channels: the channel count the bundle asks for (``in_channels``), so that an image that cannot be
            converted to it is set aside too (see :func:`cellseg_monai.transforms.io.match_channels`); None: any.

    Returns:
        ``(good, problems)``: the readable entries, in order, and one line ``<file>: <problem>`` per unreadable one.
    """
    from cellseg_monai.transforms.checks import RequireFinite
    from cellseg_monai.transforms.io import LoadMicroscopy

    load = LoadMicroscopy(kind="image", channels=channels)
    load_as_stored = LoadMicroscopy(kind="image")  # NaN counted in the file's own pixels, not in converted channels
    finite = RequireFinite()
    good: list[dict[str, str]] = []
    problems: list[str] = []
    for entry in datalist:
        try:
            load(entry["image"])
            finite(load_as_stored(entry["image"]))
        except DataError as exc:
            problems.append(str(exc))
        else:
            good.append(dict(entry))
    return good, problems
