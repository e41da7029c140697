"""Where a command writes: never into (or around) its inputs, never over earlier outputs unless asked to."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cellseg_monai.data.io import OverwriteError
from cellseg_monai.guards.errors import UsageError

__all__ = ["check_existing_outputs", "check_output_dir"]


def check_output_dir(
    output_dir: str | os.PathLike,
    protected: Iterable[Path],
    inputs: Iterable[str | os.PathLike] = (),
    option: str = "--output_dir",
) -> None:
    """Refuse an output folder that would replace or mix with inputs.

    Args:
        output_dir: the output folder (need not exist).
        protected: resolved folders that may not be the output folder, hold it or lie inside it
            (:func:`~cellseg_monai.guards.inputs.protected_folders`).
        inputs: input files; the output folder may not hold them (be their folder or one above it).
        option: the option named in the message.

    Raises:
        UsageError: naming the option, the output folder and the input folder or file it collides with; or when
            the output path is an existing file.
    """
    out = Path(output_dir).resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(option, f"{output_dir} is a file; give a folder for the outputs")
    for folder in sorted(protected, key=lambda f: len(f.parts), reverse=True):  # name the closest input folder
        if out == folder or folder in out.parents:
            where = "is" if out == folder else "is inside"
            raise UsageError(
                option,
                f"{output_dir} {where} the input folder {folder}; outputs would replace or mix with the inputs, "
                "choose a folder outside the dataset",
            )
        if out in folder.parents:
            raise UsageError(
                option, f"{output_dir} holds the input folder {folder}; choose a folder outside the dataset"
            )
    for file in inputs:
        path = Path(file).resolve()
        if out in path.parents:
            raise UsageError(option, f"{output_dir} holds the input file {path}; choose another folder")


def check_existing_outputs(
    output_dir: str | os.PathLike, names: Iterable[str], overwrite: bool, option: str = "--output_dir"
) -> None:
    """Refuse to write files that already exist in ``output_dir`` unless ``overwrite``.

    Raises:
        OverwriteError: naming the first existing file and how many exist.
    """
    if overwrite:
        return
    out = Path(output_dir)
    existing = [out / name for name in names if (out / name).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
        raise OverwriteError(
            f"{existing[0]}: exists{more}; pass --overwrite True to replace, or choose another {option}"
        )
