"""Locating a bundle's root directory and its checkpoints from inside a bundle config.

MONAI's ``python -m monai.bundle run --config_file bundles/<name>/configs/train.json`` does not tell the config
where it lives, and model-zoo bundles assume ``bundle_root = "."`` (run from inside the bundle). Our users run
from the repository root (and through a ``bundles/imppartial`` alias), so configs call
``$cellseg_monai.bundle.locate_bundle_root('<name>')`` instead. ``--bundle_root DIR`` still overrides it.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["locate_bundle_root", "existing_checkpoint"]

_CONFIG_ARG = "--config_file"


def _config_files_from_argv(argv: Sequence[str]) -> list[str]:
    """Paths given to ``--config_file`` on a ``monai.bundle`` command line (a path or a python-style list)."""
    values: list[str] = []
    for i, arg in enumerate(argv):
        if arg == _CONFIG_ARG and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(_CONFIG_ARG + "="):
            values.append(arg.split("=", 1)[1])
    files: list[str] = []
    for value in values:
        value = value.strip()
        if value.startswith("["):
            try:
                files.extend(str(v) for v in ast.literal_eval(value))
            except (ValueError, SyntaxError):
                files.extend(v.strip(" '\"") for v in value.strip("[]").split(","))
        else:
            files.append(value)
    return files


def _root_of_config(path: str | os.PathLike) -> Path:
    parent = Path(os.path.abspath(path)).parent
    return parent.parent if parent.name == "configs" else parent


def locate_bundle_root(name: str, argv: Sequence[str] | None = None, cwd: str | os.PathLike | None = None) -> str:
    """Return the root directory of bundle ``name`` (the folder holding ``configs/``).

    Tried in order: the folder of the first ``--config_file`` on the command line (so ``bundles/imppartial``,
    a symlink, stays ``bundles/imppartial``); the current directory when it holds ``configs/metadata.json``
    (the model-zoo habit of running inside the bundle); ``bundles/<name>`` of the repository that this package
    was installed from (editable installs, tests calling ``monai.bundle.run`` in-process).

    Raises:
        FileNotFoundError: none of these is a bundle; pass ``--bundle_root`` explicitly.
    """
    argv = sys.argv if argv is None else argv
    for config_file in _config_files_from_argv(argv):
        root = _root_of_config(config_file)
        if (root / "configs").is_dir():
            return str(root)
    here = Path(cwd) if cwd is not None else Path.cwd()
    if (here / "configs" / "metadata.json").is_file():
        return str(here.absolute())
    repo_bundle = Path(__file__).resolve().parents[2] / "bundles" / name
    if (repo_bundle / "configs").is_dir():
        return str(repo_bundle)
    raise FileNotFoundError(
        f"cannot find the root of bundle '{name}': no --config_file on the command line, no configs/ in the current "
        f"directory and no {repo_bundle}; pass --bundle_root <dir>"
    )


def existing_checkpoint(path: str | os.PathLike) -> str:
    """Return ``path`` when it is a file; otherwise raise a ``FileNotFoundError`` that tells the user what to do."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no trained weights at {path}: train the bundle first (configs/train.json writes models/model.pt) "
            "or pass --ckpt_path <file.pt>"
        )
    return str(path)
