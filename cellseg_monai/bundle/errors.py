"""One-line errors for ``python -m monai.bundle run``: what ``cellseg-monai`` does for its commands
(:mod:`cellseg_monai.guards.errors`), for the bundle configs that users run through MONAI directly.

Without it a bad file in a dataset ends a training with MONAI's ``RuntimeError: Failed to instantiate component
'CacheDataset'`` above several stack traces, and, when a ``CacheDataset`` thread was still working on the next
image, the interpreter's shutdown then aborts the process (``terminate called without an active exception``,
exit code 134). :func:`install_error_report`, the first ``initialize`` expression of every ``train.json``, makes
the process end with the library's own message instead.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import sys
import threading
import types
from typing import Any

from cellseg_monai.data.io import DataError
from cellseg_monai.guards.errors import describe_error, hidden_tracebacks

__all__ = ["DEBUG_ENV", "debug_requested", "install_error_report"]

DEBUG_ENV = "CELLSEG_DEBUG"
"""Environment variable that keeps Python's tracebacks (``CELLSEG_DEBUG=1``)."""

EXIT_INTERRUPTED = 130

_HINT = ("(run with --debug for the traceback)", f"(set {DEBUG_ENV}=1 for the traceback)")
# torch re-raises an error of a DataLoader worker process as the same type with this text before the traceback
_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*\nOriginal Traceback")
_EXCEPTION_LINE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*(?:Error|Exception)): (?P<message>.+)$", re.MULTILINE)
_state: dict[str, Any] = {}


def debug_requested() -> bool:
    """True when the environment asks for tracebacks (``CELLSEG_DEBUG`` = 1 / true / yes)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def _from_worker(exc: BaseException) -> BaseException:
    """The error a ``DataLoader`` worker process raised, rebuilt from the text torch passes on (whose message holds
    the worker's whole traceback); ``exc`` when no worker error is in its ``__cause__`` chain.

    The first exception line of that traceback is the deepest cause (e.g. the ``DataError`` naming the file below
    MONAI's ``RuntimeError: applying transform``).
    """
    cause: BaseException | None = exc
    while cause is not None:
        text = str(cause)
        if _WORKER.match(text):
            match = _EXCEPTION_LINE.search(text)
            if match is None:
                return exc
            name, message = match.group("name"), match.group("message")
            builtin = getattr(builtins, name.rsplit(".", 1)[-1], None)
            if name.endswith("DataError"):
                return DataError(message)
            if isinstance(builtin, type) and issubclass(builtin, Exception):
                with contextlib.suppress(Exception):
                    return builtin(message)
            return RuntimeError(f"{name}: {message}")
        cause = cause.__cause__
    return exc


def _lines(exc: BaseException) -> tuple[list[str], int]:
    if isinstance(exc, KeyboardInterrupt):
        return [
            "interrupted (files written so far are complete; a training continues from its newest checkpoint with "
            "--resume True)"
        ], EXIT_INTERRUPTED
    lines, code = describe_error(_from_worker(exc))
    return [line.replace(*_HINT) for line in lines], code


def _exit(code: int) -> None:
    """Flush what was printed and logged, then end the process without the interpreter's shutdown (which may abort
    on a thread a library left running). Run locks this process holds go first (``os._exit`` skips ``atexit``)."""
    from cellseg_monai.guards.lock import release_held

    with contextlib.suppress(Exception):
        release_held()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _report(exc_type: type[BaseException], exc: BaseException, tb: types.TracebackType | None) -> None:
    lines, code = _lines(exc)
    if _state.get("debug"):
        sys.__excepthook__(exc_type, exc, tb)
    else:
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
    _exit(code)


def _report_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    if _state.get("debug"):
        threading.__excepthook__(args)
        return
    name = args.thread.name if args.thread is not None else "?"
    for line in _lines(args.exc_value)[0]:
        print(f"error: in thread {name}: {line}", file=sys.stderr)


def install_error_report(debug: bool | None = None) -> None:
    """End this process on an uncaught error with one line per problem on stderr, ``error: <file>: <problem>``
    (:func:`cellseg_monai.guards.describe_error`), and its exit code: 1 bad data (or unexpected), 2 bad usage,
    130 interrupted. Log records carry no traceback either. For bundle configs: ``"initialize":
    ["$cellseg_monai.bundle.install_error_report()", ...]``.

    Args:
        debug: keep Python's tracebacks (the exit code stays the same); default: :func:`debug_requested`.

    An error in another thread is reported as one line ``error: in thread <name>: ...`` (the thread ends, the
    process goes on, as Python does by default). Calling this again only updates ``debug``.
    """
    debug = debug_requested() if debug is None else bool(debug)
    _state["debug"] = debug
    quiet = _state.get("quiet_logs")
    if not debug and quiet is None:
        _state["quiet_logs"] = quiet = hidden_tracebacks()
        quiet.__enter__()
    elif debug and quiet is not None:
        quiet.__exit__(None, None, None)
        del _state["quiet_logs"]
    sys.excepthook = _report
    threading.excepthook = _report_thread
