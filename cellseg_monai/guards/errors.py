"""From an exception to what the user reads: one line ``<file or option>: <problem>`` per problem and an exit code.

Exit codes: :data:`EXIT_DATA` (1) for bad input data (unreadable, corrupt or missing files, images skipped in a
batch) and anything unexpected; :data:`EXIT_USAGE` (2) for bad usage (an unknown option, an out-of-range setting,
an output that would overlap or replace what must be kept).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

from cellseg_monai.data.io import DataError, OverwriteError

__all__ = [
    "EXIT_DATA",
    "EXIT_USAGE",
    "MAX_LINE",
    "SkippedInputs",
    "UsageError",
    "describe_error",
    "hidden_tracebacks",
    "root_cause",
]

EXIT_DATA = 1
"""Exit code for bad input data and unexpected errors."""
EXIT_USAGE = 2
"""Exit code for bad usage: unknown option, out-of-range setting, an output that would replace what must be kept."""

MAX_LINE = 400
"""Longest problem description printed (longer ones, e.g. a list of 100 mismatched weights, are cut with "...")."""

# library errors whose message already names the file or option: unwrapping stops at them
_DESCRIBED: tuple[type[BaseException], ...] = (DataError, OverwriteError)


class UsageError(ValueError):
    """A command-line option is unknown, has the wrong type or is out of range.

    Args:
        option: the option as typed, e.g. ``"--prob_threshold"``.
        problem: what is wrong and, where possible, what to do instead.
    """

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option


class SkippedInputs(Exception):
    """Some inputs of a batch could not be processed; the others were.

    Args:
        problems: one line per skipped input, each naming the file and the problem.
        summary: one closing line (e.g. ``"segmented 2 of 3 images; skipped 1"``).
    """

    def __init__(self, problems: Sequence[str], summary: str) -> None:
        super().__init__(summary)
        self.problems = list(problems)
        self.summary = summary


def root_cause(exc: BaseException) -> BaseException:
    """The exception that says what went wrong, below wrappers such as MONAI's
    ``RuntimeError("Failed to instantiate component ...") from e``.

    Walks the ``__cause__`` chain and stops at the first library error whose message names the file or option
    (:class:`~cellseg_monai.data.io.DataError`, :class:`~cellseg_monai.data.io.OverwriteError`,
    :class:`UsageError`, an ``OSError`` with a file name); otherwise returns the deepest cause.
    """
    while True:
        if isinstance(exc, (*_DESCRIBED, UsageError)) or (isinstance(exc, OSError) and exc.filename):
            return exc
        if exc.__cause__ is None:
            return exc
        exc = exc.__cause__


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def _message(exc: BaseException) -> str:
    """``<file or option>: <problem>`` for the known kinds of error, ``<Type>: <message>`` for others."""
    if isinstance(exc, (*_DESCRIBED, UsageError)):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, (OSError, ValueError, TypeError)):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _is_expected(exc: BaseException) -> bool:
    """An error of bad input or usage (the message says it all), not a bug or an environment problem."""
    return isinstance(exc, (OSError, ValueError, TypeError, KeyError))


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, (UsageError, OverwriteError)):
        return EXIT_USAGE
    if isinstance(exc, (DataError, OSError)):
        return EXIT_DATA
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return EXIT_USAGE
    return EXIT_DATA


def describe_error(exc: BaseException) -> tuple[list[str], int]:
    """What the command line prints for ``exc`` (each line to be prefixed with ``error: ``) and its exit code.

    Returns:
        ``(lines, exit_code)``: one line per skipped input plus the summary for :class:`SkippedInputs`, else one
        line for the :func:`root_cause`; newlines inside messages are folded so every problem is one line.
    """
    if isinstance(exc, SkippedInputs):
        return [_one_line(p) for p in exc.problems] + [_one_line(exc.summary)], EXIT_DATA
    cause = root_cause(exc)
    hint = "" if _is_expected(cause) else " (run with --debug for the traceback)"
    return [_one_line(_message(cause)) + hint], _exit_code(cause)


@contextlib.contextmanager
def hidden_tracebacks() -> Iterator[None]:
    """Log records made inside the block carry no traceback (their message line stays).

    Handlers of the libraries the commands run (e.g. MONAI's ``StatsHandler.exception_raised``) log the traceback
    of an error before it propagates; the command line reports the error as one line instead, and shows tracebacks
    only with ``--debug``. Works by wrapping the log record factory, so it covers loggers configured later too.
    """
    make_record = logging.getLogRecordFactory()

    def without_traceback(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return record

    logging.setLogRecordFactory(without_traceback)
    try:
        yield
    finally:
        logging.setLogRecordFactory(make_record)
