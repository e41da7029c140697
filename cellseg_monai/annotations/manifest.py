"""Which weak-label files ``simulate`` wrote: a small record kept beside them, so that nothing a user made is lost.

:func:`~cellseg_monai.annotations.simulate.simulate_dataset` writes into folders where users keep their own weak
labels (``<dataset>/weak/scribbles/``, ``<dataset>/weak/counts.json``, ...). Before it writes, it asks a
:class:`SimulationManifest` of the output folder whether every file it would replace (or, for a folder of per-image
files, every file already in the folder) is one it wrote itself and nobody changed since (MD5 of the bytes). A file
the record does not know, or whose bytes changed, is the user's: the run is refused with an
:class:`~cellseg_monai.data.io.OverwriteError` naming it. Files written with other settings (kind, seed, budget, ...)
are replaced only with ``overwrite=True``; a user's files never are.

The record is ``<folder>/.cellseg-simulated.json`` (a hidden file the dataset readers skip)::

    {"written_by": "cellseg-monai simulate",
     "files": {"img0.tif": {"settings": {"kind": "scribbles", "seed": 0, ...}, "md5": "9e10..."}, ...}}

An entry whose ``md5`` is null is a file a run was about to write when it stopped; it is treated as simulate's own.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from cellseg_monai.data.io import DataError, OverwriteError, atomic_path

__all__ = ["MANIFEST_NAME", "SimulationManifest", "file_md5"]

MANIFEST_NAME = ".cellseg-simulated.json"
"""File name of the record in each folder ``simulate`` writes into."""

_WRITTEN_BY = "cellseg-monai simulate"


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SimulationManifest:
    """The record of the files ``simulate`` wrote in one folder.

    Args:
        folder: the output folder; the record is ``folder / MANIFEST_NAME`` (absent: nothing written yet).

    Raises:
        DataError: the record exists but is not a manifest written by ``simulate`` (unreadable or foreign JSON).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self.files: dict[str, dict[str, object]] = {}
        if self.path.is_file():
            try:
                record = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise DataError(f"{self.path}: cannot read the record of simulated files ({exc})") from exc
            if not isinstance(record, dict) or record.get("written_by") != _WRITTEN_BY:
                raise DataError(f"{self.path}: not a record written by cellseg-monai simulate")
            self.files = dict(record.get("files", {}))

    def owns(self, name: str) -> bool:
        """True when ``folder/name`` is a file this record lists and its bytes are the ones written (or the write
        was interrupted before the checksum was recorded)."""
        entry = self.files.get(name)
        if entry is None:
            return False
        md5 = entry.get("md5")
        return md5 is None or file_md5(self.folder / name) == md5

    def check_replaceable(
        self, names: Iterable[str], settings: Mapping[str, object], overwrite: bool = False, whole_folder: bool = False
    ) -> None:
        """Refuse a write that would replace or mix with files ``simulate`` did not write.

        Args:
            names: file names (in ``folder``) the run will write.
            settings: the run's settings (kind, seed, budget, ...), compared with those recorded per file.
            overwrite: allow replacing simulate's own files written with other settings.
            whole_folder: every entry of the folder must be simulate's own (a folder of per-image files), not only
                the files that would be replaced.

        Raises:
            OverwriteError: naming the first file that is not simulate's own (or was changed since), or that was
                written with other settings when ``overwrite`` is False.
        """
        targets = {n for n in names if (self.folder / n).exists()}
        if whole_folder and self.folder.is_dir():
            targets |= {p.name for p in self.folder.iterdir() if not p.name.startswith(".")}
        for name in sorted(targets):
            path = self.folder / name
            if path.is_dir() or not self.owns(name):
                raise OverwriteError(
                    f"{path}: exists and was not written by cellseg-monai simulate (or was edited since); files it "
                    "did not write are never replaced: move them away or pass another --out_dir"
                )
            old = self.files[name].get("settings")
            if not overwrite and old != dict(settings):
                raise OverwriteError(
                    f"{path}: simulated earlier with other settings {old}; pass --overwrite True to replace it "
                    f"with {dict(settings)}, or another --out_dir"
                )

    def begin(self, names: Iterable[str], settings: Mapping[str, object]) -> None:
        """Record that the run is about to write ``names`` (checksum pending) and save the record."""
        for name in names:
            self.files[name] = {"settings": dict(settings), "md5": None}
        self.save()

    def finish(self, names: Iterable[str]) -> None:
        """Record the checksums of the written files ``names`` and save the record."""
        for name in names:
            self.files[name]["md5"] = file_md5(self.folder / name)
        self.save()

    def save(self) -> None:
        """Write the record atomically."""
        record = {"written_by": _WRITTEN_BY, "files": dict(sorted(self.files.items()))}
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
