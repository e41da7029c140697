"""From an exception to the one line the user reads, and its exit code."""

from __future__ import annotations

import logging

import pytest

from cellseg_monai.data.io import DataError, OverwriteError
from cellseg_monai.guards import EXIT_DATA, EXIT_USAGE, SkippedInputs, UsageError, describe_error, hidden_tracebacks


def wrapped(inner: BaseException, wrapper: BaseException) -> BaseException:
    """``wrapper`` raised ``from inner``, as MONAI's config parser does."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise wrapper from exc
    except BaseException as exc:
        return exc


def decoder_error() -> BaseException:
    return wrapped(ValueError("TIFF header garbage"), DataError("a.tif: cannot read image file"))


@pytest.mark.parametrize(
    "exc, line, code",
    [
        (UsageError("--min_size", "expected a minimum >= 0, got -1"), "--min_size: expected a minimum >= 0, got -1", 2),
        (DataError("a.tif: cannot read\nimage file"), "a.tif: cannot read image file", 1),  # folded to one line
        (OverwriteError("out/a.tif: exists"), "out/a.tif: exists", 2),
        (FileNotFoundError(2, "No such file or directory", "x.pt"), "x.pt: No such file or directory", 1),
        # MONAI wraps errors of instantiation / evaluation: the root message is shown
        (
            wrapped(FileNotFoundError("no trained weights at m.pt"), RuntimeError("Failed to evaluate ...")),
            "no trained weights at m.pt",
            1,
        ),
        (wrapped(ValueError("overlap must be in [0, 1)"), RuntimeError("Failed to instantiate ...")), None, 2),
        # ... but a library error that names the file is not unwrapped to the decoder's message below it
        (wrapped(decoder_error(), RuntimeError("Failed to instantiate ...")), "a.tif: cannot read image file", 1),
        (KeyError("id='x' is not found"), "id='x' is not found", 2),
        (
            RuntimeError("CUDA out of memory"),
            "RuntimeError: CUDA out of memory (run with --debug for the traceback)",
            1,
        ),
    ],
)
def test_describe_error(exc, line, code):
    lines, exit_code = describe_error(exc)
    assert exit_code == code
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0] == (line or "overlap must be in [0, 1)")


def test_skipped_inputs_is_one_line_each_then_the_summary():
    lines, code = describe_error(SkippedInputs(["a.tif: corrupt", "b.tif: empty"], "segmented 1 of 3 images"))
    assert (lines, code) == (["a.tif: corrupt", "b.tif: empty", "segmented 1 of 3 images"], EXIT_DATA)
    assert EXIT_USAGE == 2


def test_long_messages_are_cut():
    (line,), _ = describe_error(RuntimeError("size mismatch " * 200))
    assert len(line) < 500 and "..." in line and line.endswith("(run with --debug for the traceback)")


def test_hidden_tracebacks_keeps_the_message_drops_the_traceback(caplog):
    log = logging.getLogger("tests.guards")
    with hidden_tracebacks():
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("Exception: boom")
    try:
        raise ValueError("after")
    except ValueError:
        log.exception("Exception: after")
    inside, after = caplog.records[-2:]
    assert inside.getMessage() == "Exception: boom" and inside.exc_info is None
    assert after.exc_info is not None  # the factory is restored
