"""Weights files: refuse an empty, corrupt, foreign or mismatched checkpoint with one line naming the file.

Without this check ``torch.load`` ends a run with a bare ``EOFError`` (empty file), ``UnpicklingError`` (random
bytes) or ``KeyError: 101`` (a text file), and ``load_state_dict`` with a list of hundreds of missing keys, none of
which names the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cellseg_monai.data.io import DataError

__all__ = ["check_weights"]


def _state_dict(loaded: Any) -> Mapping[str, Any] | None:
    """The weights in what ``torch.load`` returned: a plain state dict, or a training checkpoint's ``"model"``."""
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        loaded = loaded["model"]
    if isinstance(loaded, Mapping) and loaded and all(isinstance(k, str) for k in loaded):
        return loaded
    return None


def check_weights(path: str | os.PathLike, expected_keys: Iterable[str] | None = None) -> Mapping[str, Any]:
    """Load ``path`` as ``torch.load(..., weights_only=True)`` would and check it holds weights for the network.

    Args:
        path: a ``model.pt`` (plain state dict) or a training checkpoint (``{"model": state_dict, ...}``).
        expected_keys: the network's ``state_dict()`` keys; when given, the file must hold exactly these.

    Returns:
        The state dict.

    Raises:
        DataError: ``<path>: <problem>`` — missing, a folder, empty, not a PyTorch file, not a state dict, or the
            weights of another network (with the first missing and unexpected keys and how many).
    """
    import torch

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: weights file does not exist")
    if p.is_dir():
        raise DataError(f"{p}: is a folder; give the weights file (e.g. models/model.pt)")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: weights file is empty (0 bytes)")
    try:
        loaded = torch.load(p, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 -- garbage bytes fail in many ways (UnpicklingError, EOFError, KeyError,
        # BadZipFile, UnicodeDecodeError, OverflowError, ...): every one means "not a weights file" here
        kind = type(exc).__name__
        raise DataError(f"{p}: not a PyTorch weights file, or a damaged one ({kind}); was it fully copied?") from exc
    state = _state_dict(loaded)
    if state is None:
        raise DataError(
            f"{p}: holds a {type(loaded).__name__}, not a state dict of network weights (or a training checkpoint "
            "with a 'model' entry)"
        )
    if expected_keys is not None:
        expected = set(expected_keys)
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            parts = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
            parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
            raise DataError(
                f"{p}: weights of another network (keys: {', '.join(parts)}); are they this bundle's, with the "
                "same network settings?"
            )
    return state
