"""Process-wide state that a test may change through the code it runs, restored after every test.

A bundle run in the test process (``monai.bundle.run`` of an ``inference.json``) calls
:func:`cellseg_monai.bundle.install_error_report`, which — as it should in a command's process — replaces
``sys.excepthook``, ``threading.excepthook`` and the log record factory for the rest of the process. Restoring
them keeps the tests that follow independent of the order pytest runs them in.
"""

from __future__ import annotations

import logging
import sys
import threading

import pytest


@pytest.fixture(autouse=True)
def _restore_process_hooks():
    saved = sys.excepthook, threading.excepthook, logging.getLogRecordFactory()
    yield
    from cellseg_monai.bundle import errors

    errors._state.clear()
    sys.excepthook, threading.excepthook = saved[:2]
    logging.setLogRecordFactory(saved[2])
