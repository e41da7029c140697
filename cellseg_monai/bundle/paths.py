"""Where bundles are: the bundles that come with the package (found by name, for the CLI, the Python API and the
benchmarks), and a bundle's own root directory and checkpoints as seen from inside its configs.

**Finding a bundle by name or folder** (:func:`find_bundle`): a folder holding ``configs/`` is taken as given;
otherwise the name (``imppartial`` is an alias of ``impartial``) is looked up in :func:`bundles_dir`, the folder of
bundles that travel with the package: ``cellseg_monai/_bundles``, which in a checkout is a link to the repository's
``bundles/`` and in an installed wheel is a copy of it (``pyproject.toml`` ships it as package data).

**A bundle config locating itself** (``bundle_root``):

A bundle's configs name files relative to ``bundle_root`` (``models/model.pt``, ``runs/``). MONAI does not tell a
config where it was read from, and model-zoo bundles assume ``bundle_root = "."`` (run from inside the bundle).
Our configs call ``$cellseg_monai.bundle.locate_bundle_root('<name>')``, which follows one rule:

1. ``bundle_root`` given explicitly always wins: ``--bundle_root DIR`` on the command line,
   ``create_workflow(..., bundle_root=DIR)``, ``parser["bundle_root"] = DIR`` (MONAI Label and the model zoo's CI
   pass it this way); the expression is then never evaluated.
2. The current directory, when it is this bundle (it holds ``configs/metadata.json`` and is named ``<name>`` or its
   configs name ``<name>``): the model-zoo habit of running inside the bundle, an unpacked zip included.
3. ``bundles/<name>`` under the current directory: running from the root of a checkout of this repository (the
   ``bundles/imppartial`` alias is a link to the same folder).
4. Otherwise a ``FileNotFoundError`` that says how to pass it. The root is never guessed from ``sys.argv`` or from
   where the package is installed, so a config is never silently tied to another copy of the bundle.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BUNDLE_ALIASES",
    "bundles_dir",
    "bundle_names",
    "find_bundle",
    "locate_bundle_root",
    "is_bundle_dir",
    "existing_checkpoint",
]

BUNDLE_ALIASES: dict[str, str] = {"imppartial": "impartial"}
"""Other names of a bundle (``bundles/imppartial`` is a link to ``bundles/impartial`` in a checkout)."""


def bundles_dir() -> Path:
    """The folder of the bundles that come with the package, ``<package>/_bundles``, with links resolved (a checkout:
    the repository's ``bundles/``; an installed wheel: its copy). It may be missing from a broken install."""
    return (Path(__file__).resolve().parents[1] / "_bundles").resolve()


def bundle_names() -> list[str]:
    """Names of the bundles that come with the package (folders of :func:`bundles_dir` holding
    ``configs/metadata.json``), sorted; aliases (links, :data:`BUNDLE_ALIASES`) are not listed."""
    root = bundles_dir()
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if not p.is_symlink() and p.name not in BUNDLE_ALIASES and is_bundle_dir(p, p.name)
    )


def find_bundle(bundle: str | os.PathLike) -> Path:
    """The root folder (holding ``configs/``) of a bundle given by folder or by name: the one rule the CLI, the Python
    API (:func:`cellseg_monai.load_bundle`) and ``benchmarks/run.py`` share.

    Args:
        bundle: a folder holding ``configs/`` (an unpacked model-zoo zip, a copy you edited), or the name of a bundle
            that comes with the package (:func:`bundle_names`, or an alias from :data:`BUNDLE_ALIASES`). A folder
            wins over a name.

    Returns:
        The absolute bundle folder; for a name, the folder under :func:`bundles_dir` (aliases resolved).

    Raises:
        FileNotFoundError: neither a bundle folder nor a known name; the message lists the known names.
    """
    path = Path(bundle)
    if (path / "configs").is_dir():
        return path.absolute()
    name = BUNDLE_ALIASES.get(str(bundle), str(bundle))
    shipped = bundles_dir() / name
    if "/" not in name and "\\" not in name and name not in ("", ".", "..") and (shipped / "configs").is_dir():
        return shipped
    known = bundle_names()
    where = f"one of {known}" if known else f"a bundle name (none found: {bundles_dir()} is missing or empty)"
    raise FileNotFoundError(f"no bundle '{bundle}': give a bundle folder (with configs/) or {where}")


def is_bundle_dir(path: str | os.PathLike, name: str) -> bool:
    """Whether ``path`` is the root of bundle ``name``: it holds ``configs/metadata.json`` and either its folder is
    called ``name`` (after resolving links) or one of its configs locates itself as ``name``."""
    path = Path(path)
    if not (path / "configs" / "metadata.json").is_file():
        return False
    if path.resolve().name == name:
        return True
    marker = f"locate_bundle_root('{name}')"
    return any(marker in f.read_text(errors="replace") for f in (path / "configs").glob("*.json"))


def locate_bundle_root(name: str, cwd: str | os.PathLike | None = None) -> str:
    """Return the root directory of bundle ``name`` (the folder holding ``configs/``), by the rule of this module.

    Args:
        name: the bundle's folder name (``impartial``, ``lacss``, ...).
        cwd: the directory to look from (default: the current working directory).

    Raises:
        FileNotFoundError: neither the current directory nor ``./bundles/<name>`` is the bundle.
    """
    here = Path(cwd) if cwd is not None else Path.cwd()
    if is_bundle_dir(here, name):
        return str(here.absolute())
    in_checkout = here / "bundles" / name
    if is_bundle_dir(in_checkout, name):
        return str(in_checkout.absolute())
    raise FileNotFoundError(
        f"cannot tell where bundle '{name}' is: {here} is neither the bundle nor a folder holding bundles/{name}. "
        "Run from inside the bundle or from the repository root, or pass the root explicitly: "
        "--bundle_root <dir> (Python: create_workflow(..., bundle_root=<dir>) or parser['bundle_root'] = <dir>)"
    )


def existing_checkpoint(path: str | os.PathLike) -> str:
    """Return ``path`` when it is a file; otherwise raise a ``FileNotFoundError`` that tells the user what to do."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no trained weights at {path}: train the bundle first (configs/train.json writes model.pt into its "
            "output_dir) or pass --ckpt_path <file.pt>"
        )
    return str(path)
