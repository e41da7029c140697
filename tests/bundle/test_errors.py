"""Tests of cellseg_monai.bundle.errors: an uncaught error ends the process with one line and its exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cellseg_monai.bundle.errors import _from_worker
from cellseg_monai.data.io import DataError

REPO = Path(__file__).resolve().parents[2]
HOOK = "import cellseg_monai.bundle as b; b.install_error_report()\n"


def _run(body: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("CELLSEG_DEBUG", None)
    if debug:
        env["CELLSEG_DEBUG"] = "1"
    code = HOOK + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


CASES = [
    (
        "from cellseg_monai.data.io import DataError\n"
        "try:\n    raise DataError('/d/labels/a.tif: label has height x width (5, 4)')\n"
        "except DataError as e:\n    raise RuntimeError(\"Failed to instantiate component 'CacheDataset'\") from e\n",
        1,
        "error: /d/labels/a.tif: label has height x width (5, 4)",
    ),
    (
        "from cellseg_monai.handlers import RunMismatchError\nraise RunMismatchError('/r/run.json: --resume refused')\n",
        2,
        "error: /r/run.json: --resume refused",
    ),
    (
        "raise IndexError('tuple index out of range')\n",
        1,
        "error: IndexError: tuple index out of range (set CELLSEG_DEBUG=1 for the traceback)",
    ),
    (
        "raise KeyboardInterrupt\n",
        130,
        "error: interrupted (files written so far are complete; a training continues from its newest checkpoint "
        "with --resume True)",
    ),
]


@pytest.mark.parametrize("body, code, line", CASES)
def test_one_line_and_the_exit_code(body, code, line):
    proc = _run(body)
    assert proc.returncode == code
    assert proc.stderr == line + "\n"


def test_logged_tracebacks_are_hidden_and_debug_keeps_them():
    body = """
        import logging
        logging.basicConfig()
        try:
            1 / 0
        except ZeroDivisionError:
            logging.getLogger("x").exception("Exception: division")  # as MONAI's StatsHandler does
        raise ValueError("/d/split.json: bad")
    """
    quiet = _run(body)
    assert (quiet.returncode, quiet.stderr) == (2, "ERROR:x:Exception: division\nerror: /d/split.json: bad\n")
    loud = _run(body, debug=True)
    assert loud.returncode == 2
    assert loud.stderr.count("Traceback (most recent call last):") == 2
    assert loud.stderr.splitlines()[-1] == "ValueError: /d/split.json: bad"


def test_no_abort_when_a_cache_thread_is_still_working():
    """A CacheDataset whose second item fails, the third still loading in its thread: without the hook the
    interpreter's shutdown aborts (exit 134, 'terminate called without an active exception')."""
    body = """
        import torch
        from monai.data import CacheDataset
        from monai.transforms import Compose, Lambdad, ScaleIntensityRangePercentilesd
        from cellseg_monai.data.io import DataError

        def load(i):
            if i == 1:
                raise DataError("/d/images/img1.tif: cannot read image file")
            return torch.rand(3, 96, 80)

        scale = ScaleIntensityRangePercentilesd("image", 1, 99.8, 0.0, 1.0, clip=True, channel_wise=True)
        CacheDataset([{"image": i} for i in range(3)], Compose([Lambdad("image", load), scale]), progress=False)
    """
    proc = _run(body)
    assert (proc.returncode, proc.stderr) == (1, "error: /d/images/img1.tif: cannot read image file\n")


def test_an_error_in_a_thread_is_one_line_and_the_process_goes_on():
    body = """
        import threading
        t = threading.Thread(target=lambda: 1 / 0, name="writer")
        t.start(); t.join()
        print("still here")
    """
    proc = _run(body)
    assert (proc.returncode, proc.stdout) == (0, "still here\n")
    assert proc.stderr == (
        "error: in thread writer: ZeroDivisionError: division by zero (set CELLSEG_DEBUG=1 for the traceback)\n"
    )


class _BadPoints(torch.utils.data.Dataset):
    """Fails like a bundle's random transform in a loader worker: MONAI's wrapper above the library's DataError."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        try:
            raise DataError(f"/d/weak/points/img{i}.csv: points CSV needs a header with columns 'y' and 'x'")
        except DataError as e:
            raise RuntimeError("applying transform <MakePointsd>") from e


def test_an_error_of_a_data_loader_worker_is_unwrapped():
    """torch re-raises a worker's error as the same type whose message is the worker's whole traceback."""
    with pytest.raises(RuntimeError) as info:
        next(iter(torch.utils.data.DataLoader(_BadPoints(), num_workers=1)))
    assert str(info.value).startswith("Caught RuntimeError in DataLoader worker process 0.")
    wrapper = RuntimeError("Failed to evaluate ConfigExpression")  # as the bundle's "run" expression wraps it
    wrapper.__cause__ = info.value
    error = _from_worker(wrapper)
    assert type(error) is DataError
    assert str(error) == "/d/weak/points/img0.csv: points CSV needs a header with columns 'y' and 'x'"
    plain = ValueError("x")
    assert _from_worker(plain) is plain
