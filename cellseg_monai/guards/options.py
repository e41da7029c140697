"""Refuse bad command-line options before anything runs: unknown names, wrong types, out-of-range values, a device
that is not there.

``python-fire`` hands every ``--name value`` that a command does not declare to its ``**kwargs``; ``segment``
passes those to the bundle as config overrides. A misspelled option would then be a new, unused config id and be
silently ignored, so :func:`check_overrides` accepts only ids that exist in the bundle's parsed config and suggests
the closest one (``difflib``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from numbers import Real

from cellseg_monai.guards.errors import UsageError

__all__ = ["check_device", "check_flag", "check_overrides", "check_setting", "config_ids", "refuse_unknown"]

# (pattern on the last part of an id, lowest, highest, lowest allowed, highest allowed, what the value is)
_RANGES: tuple[tuple[re.Pattern[str], float, float, bool, bool, str], ...] = (
    (re.compile(r".*threshold$"), 0.0, 1.0, True, True, "a threshold in [0, 1]"),
    (re.compile(r"(.*_)?overlap$"), 0.0, 1.0, True, False, "an overlap fraction in [0, 1)"),
    (re.compile(r"^min_.*"), 0.0, float("inf"), True, False, "a minimum >= 0"),
    (
        re.compile(r".*(_size|_stride|_scale|_distance|_offset|_per_cell)$|^num_.*|^budget$|^fov$"),
        0.0,
        float("inf"),
        False,
        False,
        "a size or budget > 0",
    ),
)


def _option(name: str) -> str:
    return f"--{name}"


def _is_expression(value: object) -> bool:
    """A MONAI config expression or reference (``$...``, ``@id``), checked by the bundle at run time."""
    return isinstance(value, str) and value[:1] in ("$", "@", "%")


def check_setting(name: str, value: object) -> None:
    """Refuse a value out of range for a setting known by its name (the last ``#`` part of ``name``).

    Rules: ``*threshold`` in [0, 1]; ``*overlap`` in [0, 1); ``min_*`` >= 0; ``*_size``, ``*_stride``, ``*_scale``,
    ``*_distance``, ``*_offset``, ``*_per_cell``, ``num_*``, ``budget``, ``fov`` > 0 (each element of a list, e.g.
    ``patch_size``). Other names, and config expressions (``$...``, ``@id``), are not checked.

    Raises:
        UsageError: naming the option, the allowed range and the value given.
    """
    key = name.rsplit("#", 1)[-1]
    for pattern, low, high, low_ok, high_ok, what in _RANGES:
        if not pattern.match(key):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if _is_expression(item):
                continue
            if isinstance(item, bool) or not isinstance(item, Real):
                raise UsageError(_option(name), f"expected {what}, got {item!r}")
            above = item > low or (low_ok and item == low)
            below = item < high or (high_ok and item == high)
            if not (above and below):
                raise UsageError(_option(name), f"expected {what}, got {item!r}")
        return


def check_flag(name: str, value: object) -> None:
    """Refuse a non-boolean value for an on/off option (``--overwrite yes`` would otherwise count as on).

    Raises:
        UsageError: naming the option.
    """
    if not isinstance(value, bool):
        raise UsageError(_option(name), f"expected True or False, got {value!r}")


def refuse_unknown(given: Iterable[str], known: Iterable[str]) -> None:
    """Refuse option names not in ``known``, suggesting the closest known one.

    Raises:
        UsageError: naming the first unknown option (and ``did you mean --x?`` when one is close).
    """
    known = list(known)
    for name in given:
        if name not in known:
            raise _unknown(name, known)


def _unknown(name: str, known: Iterable[str]) -> UsageError:
    """The error for an unknown option ``name``, with the closest of ``known`` as a suggestion."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean --{close[0]}?" if close else ""
    return UsageError(_option(name), f"unknown option{hint}")


def config_ids(config: object, prefix: str = "") -> Iterator[str]:
    """Every id of a (raw) bundle config that names a dict entry, nested ids joined by ``#`` (list items
    included by index)."""
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        cid = f"{prefix}{key}"
        if isinstance(key, str):
            yield cid
        yield from config_ids(value, cid + "#")


def _check_type(name: str, value: object, default: object) -> None:
    """Refuse a value whose type cannot stand for the config's default (a word where a number or a flag goes)."""
    if _is_expression(value):
        return
    if isinstance(default, bool):
        check_flag(name, value)
    elif isinstance(default, Real) and (isinstance(value, bool) or not isinstance(value, Real)):
        raise UsageError(_option(name), f"expected a number like the bundle's {default!r}, got {value!r}")


def check_overrides(
    config: Mapping[str, object], overrides: Mapping[str, object], options: Iterable[str], reserved: Iterable[str] = ()
) -> None:
    """Accept only config overrides that name an existing id of ``config`` with a sensible value.

    Args:
        config: the bundle's raw config (``ConfigParser.get()``), nested dicts and lists.
        overrides: ``{id: value}`` from the command line.
        options: the command's own option names (offered as suggestions too).
        reserved: ids the command sets itself (e.g. ``dataset_dir`` from the input argument); refused.

    Raises:
        UsageError: an unknown id (with the closest id or option), a reserved id, a value of the wrong type for
            the id's default, or a value out of range (:func:`check_setting`).
    """
    reserved = set(reserved)
    for name, value in overrides.items():
        if name in reserved:
            raise UsageError(_option(name), "is set by the command itself; use the command's own arguments")
        try:
            default = _lookup(config, name)
        except (KeyError, IndexError, ValueError, TypeError):
            suggestions = [i for i in config_ids(config) if i not in reserved and not i.startswith("_meta_")]
            raise _unknown(name, [*options, *suggestions]) from None
        _check_type(name, value, default)
        check_setting(name, value)


def _lookup(config: object, cid: str) -> object:
    """The value at config id ``cid`` (``a#b#0``); raises KeyError, IndexError, ValueError or TypeError if absent."""
    for part in cid.split("#"):
        config = config[int(part)] if isinstance(config, list) else config[part]  # type: ignore[index]
    return config


def check_device(device: str | None) -> str | None:
    """Refuse a torch device that is malformed or not present (``cuda`` on a machine without CUDA).

    Returns:
        ``device`` unchanged (None: the bundle's default, CUDA when present).

    Raises:
        UsageError: naming ``--device`` and what is available.
    """
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError, TypeError):
        raise UsageError("--device", f"not a torch device: {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError("--device", f"{device!r} asked for but this machine has no usable CUDA GPU; use cpu")
        if dev.index is not None and dev.index >= count:
            raise UsageError("--device", f"{device!r} asked for but this machine has {count} CUDA GPU(s)")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError("--device", f"{device!r} asked for but MPS is not available; use cpu")
    return str(device)
