"""The MONAI Label venv for the real-server tests.

MONAI Label cannot live in the test environment (it needs numpy < 2), so it has its own venv, built by
``bash monailabel/install.sh`` into ``.venv-monailabel/`` (``CELLSEG_MONAILABEL_VENV`` for another folder). The venv
counts as built when its ``cellseg-install.ok`` holds the digest of the install script and of the requirements it
was built from; otherwise:

- ``CELLSEG_MONAILABEL=1``, or ``CI`` set (and ``CELLSEG_MONAILABEL`` not ``0``): the session fixture runs the
  install script once (a few minutes; its log is printed on failure) — this is how CI runs these tests with the
  README's test command;
- otherwise the tests are skipped, and the reason says how to build the venv.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "monailabel" / "install.sh"
INSTALL_TIMEOUT_S = 30 * 60


def venv_dir() -> Path:
    return Path(os.environ.get("CELLSEG_MONAILABEL_VENV") or REPO / ".venv-monailabel")


def expected_digest() -> str:
    """What install.sh writes into cellseg-install.ok: sha256 of install.sh + requirements + constraints."""
    h = hashlib.sha256()
    for f in (INSTALL, REPO / "monailabel" / "requirements.txt", REPO / "constraints.txt"):
        h.update(f.read_bytes())
    return h.hexdigest()


def venv_state(venv: Path) -> str | None:
    """None when the venv is built and current, else why not."""
    marker = venv / "cellseg-install.ok"
    if not (venv / "bin" / "python").is_file():
        return f"the MONAI Label venv is absent ({venv})"
    if not marker.is_file():
        return f"the MONAI Label venv {venv} is incomplete (an install was interrupted or failed)"
    if marker.read_text().strip() != expected_digest():
        return f"the MONAI Label venv {venv} was built from another install.sh/requirements.txt/constraints.txt"
    return None


def build_allowed() -> bool:
    flag = os.environ.get("CELLSEG_MONAILABEL", "").strip().lower()
    if flag in ("0", "false", "no"):
        return False
    return flag in ("1", "true", "yes") or bool(os.environ.get("CI", "").strip())


@contextlib.contextmanager
def _install_lock():
    """One build at a time on this machine (two pytest sessions would otherwise race on the same venv)."""
    with open(Path(tempfile.gettempdir()) / "cellseg-monailabel-install.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def monailabel_venv(tmp_path_factory) -> Path:
    """The built MONAI Label venv; built first when allowed (see the module docstring), else the test is skipped."""
    venv = venv_dir()
    why = venv_state(venv)
    if why is None:
        return venv
    if not build_allowed():
        pytest.skip(f"{why}: build it with `bash monailabel/install.sh` (or run pytest with CELLSEG_MONAILABEL=1)")
    with _install_lock():
        if venv_state(venv) is None:  # built by another session meanwhile
            return venv
        log = tmp_path_factory.mktemp("monailabel-install") / "install.log"
        # the venv gets the interpreter of the test run (install.sh's default would be python3 on the PATH)
        env = {**os.environ, "CELLSEG_MONAILABEL_VENV": str(venv), "PYTHON": os.environ.get("PYTHON", sys.executable)}
        with open(log, "w") as out:
            proc = subprocess.run(
                ["bash", str(INSTALL)], stdout=out, stderr=subprocess.STDOUT, env=env, timeout=INSTALL_TIMEOUT_S
            )
        if proc.returncode != 0 or venv_state(venv) is not None:
            tail = log.read_text(errors="replace")[-6000:]
            pytest.fail(f"bash monailabel/install.sh failed (exit {proc.returncode}); log {log}:\n{tail}")
    return venv
