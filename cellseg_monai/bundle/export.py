"""Write a bundle as the MONAI model zoo ships it: one ``<name>_v<version>.zip`` that runs with nothing from this
repository.

The zip holds ``<name>/`` with the bundle's files as they are in the repository (``configs/``, ``docs/``,
``models/model.pt``, ``LICENSE``, ``large_files.yml``) plus ``<name>/cellseg_monai/``: the library the configs import,
copied at export time from the installed package (its Python files and package data, the embedded sample images
included). The repository keeps one copy of every line; the zip carries a snapshot. ``python -m monai.bundle run``
started inside the unpacked bundle finds that package first, because Python puts the working directory on
``sys.path`` (the same mechanism by which zoo bundles import their ``scripts/``). Everything else comes from the
package index: ``monai_version``, ``pytorch_version``, ``numpy_version`` and ``required_packages_version`` of
``configs/metadata.json``.

    cellseg-monai export-bundle impartial --out dist/
    python -m monai.bundle download --name impartial --bundle_dir bundles_dl --url file:///abs/dist/impartial_v0.2.0.zip
    cd bundles_dl/impartial && python -m monai.bundle run --config_file configs/inference.json
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import cellseg_monai

from .paths import is_bundle_dir

__all__ = ["bundle_files", "library_files", "export_bundle", "ExportError"]

#: bundle entries that never travel: run outputs, caches, exported artefacts of the zoo checks
_SKIP_PARTS = {"runs", "eval", "__pycache__", ".ipynb_checkpoints"}
_SKIP_SUFFIXES = {".pyc", ".ts", ".onnx", ".tmp"}


class ExportError(ValueError):
    """The bundle cannot be exported as it is (missing weights, stale hash, not a bundle)."""


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _listed_hashes(bundle: Path) -> dict[str, str]:
    """``{path: md5}`` of ``large_files.yml`` (the simple form this project writes; no YAML parser needed)."""
    out: dict[str, str] = {}
    path = None
    for line in (bundle / "large_files.yml").read_text().splitlines():
        key, _, value = line.strip().lstrip("- ").partition(":")
        value = value.strip().strip('"')
        if key == "path":
            path = value
        elif key == "hash_val" and path:
            out[path] = value
    return out


def bundle_files(bundle: str | os.PathLike) -> list[Path]:
    """The files of a bundle folder that go into its zip (relative paths, sorted): everything but run outputs,
    caches and exported TorchScript/ONNX files."""
    bundle = Path(bundle)
    files = []
    for path in sorted(bundle.rglob("*")):
        rel = path.relative_to(bundle)
        if path.is_file() and not (_SKIP_PARTS & set(rel.parts)) and path.suffix not in _SKIP_SUFFIXES:
            files.append(rel)
    return files


def library_files(package_dir: str | os.PathLike | None = None) -> list[Path]:
    """The files of the ``cellseg_monai`` package that a bundle needs at run time (relative to the package folder):
    Python modules and package data, no caches, and not the bundles that travel with the package (``_bundles/``, a
    real folder in an installed wheel: the zip holds its own bundle)."""
    root = Path(package_dir) if package_dir is not None else Path(cellseg_monai.__file__).resolve().parent
    return [
        p.relative_to(root)
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not {"__pycache__", "_bundles"} & set(p.relative_to(root).parts)
        and p.suffix not in {".pyc", ".pyo"}
    ]


def export_bundle(bundle: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/<name>_v<version>.zip`` for the bundle folder ``bundle`` and return its path.

    ``<name>`` is the folder's real name (an alias link such as ``bundles/imppartial`` exports ``impartial``).

    Raises:
        ExportError: ``bundle`` is not a bundle, has no ``models/model.pt``, or a file listed in
            ``large_files.yml`` does not match its hash.
    """
    src = Path(bundle).resolve()
    name = src.name
    if not is_bundle_dir(src, name):
        raise ExportError(f"{bundle}: not a bundle folder (no configs/metadata.json)")
    weights = src / "models" / "model.pt"
    if not weights.is_file():
        raise ExportError(f"{weights}: no trained weights to ship; train them first (benchmarks/ship.py)")
    for rel, expected in _listed_hashes(src).items():
        if not (src / rel).is_file() or _md5(src / rel) != expected:
            raise ExportError(f"{src / rel}: does not match its md5 {expected} in {src / 'large_files.yml'}")
    version = json.loads((src / "configs" / "metadata.json").read_text())["version"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}_v{version}.zip"
    tmp = target.with_suffix(".zip.tmp")
    package = Path(cellseg_monai.__file__).resolve().parent
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in bundle_files(src):
            zf.write(src / rel, f"{name}/{rel.as_posix()}")
        for rel in library_files(package):
            zf.write(package / rel, f"{name}/cellseg_monai/{rel.as_posix()}")
    tmp.replace(target)
    return target
