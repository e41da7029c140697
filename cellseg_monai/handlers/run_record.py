"""What a training run is — bundle, config, data, seed — recorded in ``<output_dir>/run.json``, so that ``--resume``
continues only the run that wrote the folder.

The config part is the merged raw config that ``python -m monai.bundle run`` parsed (config files plus command-line
overrides, before any ``$``/``@`` is evaluated), minus :data:`RESUME_SAFE_IDS`: the ids that may change between an
interrupted run and its resumption because they say how long, where or how fast to train, not what to train.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cellseg_monai.data.io import OverwriteError, atomic_path

__all__ = [
    "RESUME_SAFE_IDS",
    "RUN_FILE",
    "RunMismatchError",
    "check_same_run",
    "read_run_file",
    "run_identity",
    "write_run_file",
]

RUN_FILE = "run.json"
"""Name of the file that records a run's identity in its ``output_dir``."""

RESUME_SAFE_IDS: tuple[str, ...] = (
    # the bundle's description (metadata.json: version, changelog), not its training
    "_meta_",
    # what to do with the folder
    "resume",
    "overwrite",
    # how long and how often: a run may be resumed to train longer or to validate at another interval
    "max_epochs",
    "train#trainer#max_epochs",
    "max_train_minutes",
    "val_interval",
    # where and how fast: device, loader processes, single or several GPUs (multi_gpu_train.json)
    "device",
    "num_workers",
    "train#dataset#num_workers",
    "train#dataloader#num_workers",
    "validate#dataset#num_workers",
    "validate#dataloader#num_workers",
    "network",
    "train#sampler",
    "train#dataloader#sampler",
    "train#dataloader#shuffle",
    "validate#sampler",
    "validate#dataloader#sampler",
    "imports",
    "initialize",
    "run",
    "finalize",
    "is_not_rank0",
    # where the files are
    "bundle_root",
    "output_dir",
    "ckpt_dir",
    "ckpt_path",
    # recorded in fields of their own
    "dataset_dir",
    "seed",
    "run_identity",
)
"""Config ids (with everything below them) left out of a run's config: changing them keeps the run the same.

``network`` is the device / ``DistributedDataParallel`` wrapping of ``network_def``, which is kept. A resumed run
repeats the uninterrupted one bit for bit only with the same ``val_interval``, ``num_workers`` and device (validation
and loader workers draw from the global random generator); it is still the same run otherwise."""

_FIELDS = ("bundle", "dataset_dir", "train_ids", "seed", "config")


class RunMismatchError(OverwriteError):
    """``--resume`` was pointed at a folder that holds another run (or a run this code cannot identify)."""


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1, 2]}}`` → ``{"a#b#0": 1, "a#b#1": 2}`` (MONAI's ``#``-separated config ids)."""
    if isinstance(config, Mapping) and config:
        out: dict[str, Any] = {}
        for key, value in config.items():
            out.update(_flatten(value, f"{prefix}#{key}" if prefix else str(key)))
        return out
    if isinstance(config, (list, tuple)) and config:
        out = {}
        for i, value in enumerate(config):
            out.update(_flatten(value, f"{prefix}#{i}" if prefix else str(i)))
        return out
    return {prefix: config}


def _is_safe(config_id: str) -> bool:
    return any(config_id == safe or config_id.startswith(safe + "#") for safe in RESUME_SAFE_IDS)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), or its ``repr`` when JSON cannot hold it."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


def _active_config() -> Mapping[str, Any] | None:
    """The raw config of the ``monai.bundle`` ``ConfigParser`` that is evaluating the caller (None outside one).

    A config expression cannot name the parser that evaluates it, so the innermost ``ConfigParser`` method on the
    call stack is found instead.
    """
    from monai.bundle import ConfigParser

    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ConfigParser):
            return owner.get()
        frame = frame.f_back
    return None


def run_identity(
    bundle_root: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    datalist: Sequence[Mapping[str, Any]],
    seed: int,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe a training run (for bundle configs: ``$cellseg_monai.handlers.run_identity(@bundle_root,
    @dataset_dir, @train#datalist, @seed)``).

    Args:
        bundle_root: the bundle folder; its name (symlinks resolved) identifies the bundle.
        dataset_dir: the dataset folder, recorded as an absolute path.
        datalist: the training datalist; its ``"id"`` values, sorted, are recorded.
        seed: the run's seed.
        config: the raw config; default: that of the ``monai.bundle`` parser evaluating this call, if any.

    Returns:
        ``{"bundle", "dataset_dir", "train_ids", "seed", "config_sha256", "config"}`` where ``config`` is the
        flattened raw config (``{"id#sub#0": value}``) without :data:`RESUME_SAFE_IDS` and ``config_sha256`` its
        SHA-256 (both absent when there is no config).
    """
    identity: dict[str, Any] = {
        "bundle": Path(bundle_root).resolve().name,
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "train_ids": sorted(str(entry.get("id", entry.get("image", ""))) for entry in datalist),
        "seed": int(seed),
    }
    if config is None:
        config = _active_config()
    if config is not None:
        kept = {k: _jsonable(v) for k, v in sorted(_flatten(config).items()) if not _is_safe(k)}
        text = json.dumps(kept, sort_keys=True, ensure_ascii=True)
        identity["config_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        identity["config"] = kept
    return identity


def read_run_file(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The identity recorded in ``<folder>/run.json``; None when there is none.

    Raises:
        RunMismatchError: the file exists but cannot be read as a run identity.
    """
    path = Path(folder) / RUN_FILE
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunMismatchError(f"{path}: cannot read the run's identity ({exc})") from exc
    if not isinstance(recorded, dict):
        raise RunMismatchError(f"{path}: cannot read the run's identity (not a JSON object)")
    return recorded


def write_run_file(folder: str | os.PathLike, identity: Mapping[str, Any]) -> Path:
    """Write ``<folder>/run.json`` atomically (4-space JSON); returns its path."""
    path = Path(folder) / RUN_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dict(identity), indent=4, ensure_ascii=True) + "\n")
    return path


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _difference(field: str, recorded: Any, current: Any) -> str:
    if field == "train_ids" and isinstance(recorded, list) and isinstance(current, list):
        added, removed = sorted(set(current) - set(recorded)), sorted(set(recorded) - set(current))
        parts = [
            f"{name} {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
            for name, ids in (("now also", added), ("no longer", removed))
            if ids
        ]
        return f"the training images differ ({'; '.join(parts) or 'same ids, another order'})"
    if field == "config" and isinstance(recorded, Mapping) and isinstance(current, Mapping):
        ids = sorted(k for k in set(recorded) | set(current) if recorded.get(k, ...) != current.get(k, ...))
        first = ids[0]
        was = _short(recorded[first]) if first in recorded else "(absent)"
        now = _short(current[first]) if first in current else "(absent)"
        more = f" and {len(ids) - 1} more id(s)" if len(ids) > 1 else ""
        return f"the config differs at {first} (run: {was}, now: {now}){more}"
    return f"the {field} differs (run: {_short(recorded)}, now: {_short(current)})"


def _comparable(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` with its config ids filtered by today's :data:`RESUME_SAFE_IDS` (a ``run.json`` written when the
    list was shorter still matches)."""
    out = dict(identity)
    if isinstance(out.get("config"), Mapping):
        out["config"] = {k: v for k, v in out["config"].items() if not _is_safe(k)}
    return out


def check_same_run(recorded: Mapping[str, Any], current: Mapping[str, Any], folder: str | os.PathLike) -> None:
    """Refuse to resume ``recorded`` (read from ``<folder>/run.json``) as the run ``current`` describes.

    Raises:
        RunMismatchError: naming the run file and the first field that differs (for the config: the first config
            id, with both values).
    """
    recorded, current = _comparable(recorded), _comparable(current)
    for field in _FIELDS:
        if recorded.get(field) != current.get(field):
            raise RunMismatchError(
                f"{Path(folder) / RUN_FILE}: --resume refused, this folder holds another run: "
                f"{_difference(field, recorded.get(field), current.get(field))}; resume with the run's own "
                "settings, or start a new run in another --output_dir"
            )
