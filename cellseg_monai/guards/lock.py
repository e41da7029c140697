"""One run at a time per output folder: an exclusive lock file, created atomically, that names its holder.

Two trainings (or two ``cellseg-monai segment``) started at the same time into one folder would both pass the
"is this folder free?" checks made at start and then write over each other. :class:`RunLock` closes that window:
the lock file ``<folder>/.cellseg-run.lock`` is created with ``O_CREAT | O_EXCL`` (the operating system lets
exactly one process create it) and holds ``{"pid", "host", "start", "command", "created"}`` of its holder; the
second run finds it and refuses with :class:`FolderInUseError` (exit code 2 on the command line), before it has
read or written anything in the folder. The holder removes the file when it is done (also at interpreter exit).

A lock left behind by a run that was killed (SIGKILL, power loss) is *stale*: its process no longer runs on this
host (or its pid now belongs to another process, told apart by its start time in ``/proc``). A stale lock is taken
over — with a warning that names it — so that ``--resume True`` after a kill needs no manual step; the takeover
itself is serialised by a second ``O_EXCL`` file so that two runs cannot both take over the same stale lock. A
lock held from another host cannot be checked and is never taken over: the error names that host and pid.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cellseg_monai.data.io import OverwriteError

__all__ = ["LOCK_FILE", "FolderInUseError", "RunLock", "hold_folder", "lock_holder", "release_held"]

LOCK_FILE = ".cellseg-run.lock"
"""Name of the lock file in the folder a run writes into."""

_BREAK_SUFFIX = ".takeover"
_BREAK_STALE_S = 30.0  # a takeover file older than this was left by a process killed while taking over

logger = logging.getLogger(__name__)

_HELD: list[RunLock] = []  # locks this process holds now, for release_held()


class FolderInUseError(OverwriteError):
    """Another run (alive, or on another host) holds the folder's lock file."""


def _start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) is in parentheses and may hold spaces
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _alive(pid: int, start: int | None) -> bool:
    """Whether ``pid`` runs on this host and, when ``start`` is known, is the very process that took the lock."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    if start is not None:
        now = _start_ticks(pid)
        if now is not None and now != start:  # the pid was reused by a later process
            return False
    return True


def lock_holder(folder: str | os.PathLike) -> dict[str, Any] | None:
    """What ``<folder>/.cellseg-run.lock`` says about its holder; None when there is no lock file.

    Returns:
        ``{"pid", "host", "start", "command", "created"}`` as written (``{}`` for an unreadable or half-written file).
    """
    path = Path(folder) / LOCK_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    created = holder.get("created")
    when = (
        time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(created)) if isinstance(created, (int, float)) else ""
    )
    command = holder.get("command")
    return f"pid {pid} on {host}{when}" + (f" ({command})" if command else "")


class RunLock:
    """Exclusive use of ``folder`` by one run.

    Args:
        folder: the run's output folder (created if missing).
        command: what the run is, written into the lock for the error message of a second run
            (e.g. ``"training supervised_unet"``); default: the program's command line.

    Use :meth:`acquire` / :meth:`release`, or the object as a context manager. :meth:`acquire` raises
    :class:`FolderInUseError` naming the lock file and its holder (pid, host, start, command) when another live run
    holds it. The file is removed by :meth:`release`, and at interpreter exit if still held; a folder that
    :meth:`acquire` created is removed too if it is still empty.
    """

    def __init__(self, folder: str | os.PathLike, command: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:4]])
        self._mine: dict[str, Any] | None = None
        self._created_folder = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._mine is not None

    def _record(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "pid": pid,
            "host": socket.gethostname(),
            "start": _start_ticks(pid),
            "command": self.command.strip(),
            "created": time.time(),
        }

    def _try_create(self, record: dict[str, Any]) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
        return True

    def _take_over(self, stale: dict[str, Any]) -> None:
        """Remove the stale lock ``stale`` unless another process is taking it over at the same moment."""
        breaker = self.path.with_name(self.path.name + _BREAK_SUFFIX)
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - breaker.stat().st_mtime > _BREAK_STALE_S:
                    breaker.unlink()
            return  # someone else is taking over; the caller retries
        os.close(fd)
        try:
            if lock_holder(self.folder) == stale:  # still the same stale lock, not a fresh one of the other taker
                logger.warning(
                    "%s: taking over a stale lock of %s, which is no longer running (an interrupted run)",
                    self.path,
                    _describe(stale),
                )
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            with contextlib.suppress(FileNotFoundError):
                breaker.unlink()

    def acquire(self) -> RunLock:
        """Take the lock (see the class docstring); returns ``self``.

        Raises:
            FolderInUseError: another live run, or a run on another host, holds the lock; or the lock file is
                unreadable and not stale by age.
        """
        if self._mine is not None:
            return self
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        record = self._record()
        host = record["host"]
        for _ in range(50):
            if self._try_create(record):
                self._mine = record
                _HELD.append(self)
                atexit.register(self.release)
                return self
            holder = lock_holder(self.folder)
            if holder is None:  # released between our attempt and our read: try again
                continue
            if not holder:  # being written right now, or garbage
                time.sleep(0.05)
                holder = lock_holder(self.folder)
                if holder == {}:
                    raise FolderInUseError(
                        f"{self.path}: another run's lock file (unreadable); if no run writes into {self.folder}, "
                        "delete this file and start again"
                    )
                continue
            pid = holder.get("pid")
            if holder.get("host") == host and isinstance(pid, int) and not _alive(pid, holder.get("start")):
                self._take_over(holder)
                continue
            if holder.get("host") != host:
                raise FolderInUseError(
                    f"{self.path}: {self.folder} is in use by another run ({_describe(holder)}); this host cannot "
                    "check whether it still runs: wait for it or choose another folder (if that run is gone, delete "
                    "the lock file)"
                )
            raise FolderInUseError(
                f"{self.path}: {self.folder} is in use by another run ({_describe(holder)}); wait for it to finish "
                "or choose another output folder"
            )
        raise FolderInUseError(f"{self.path}: could not take the lock (other runs kept taking it); try again")

    def release(self) -> None:
        """Remove the lock file if this object holds it (a file another process has since written is left alone)."""
        mine, self._mine = self._mine, None
        if mine is None:
            return
        atexit.unregister(self.release)
        with contextlib.suppress(ValueError):
            _HELD.remove(self)
        holder = lock_holder(self.folder)
        if holder and holder.get("pid") == mine["pid"] and holder.get("created") == mine["created"]:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._created_folder:  # a run refused or with nothing to write leaves no empty folder behind
            with contextlib.suppress(OSError):
                self.folder.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike, command: str | None = None) -> Iterator[RunLock]:
    """``with hold_folder(output_dir, "segment"):`` — :class:`RunLock` for the duration of the block."""
    lock = RunLock(folder, command)
    with lock:
        yield lock


def release_held() -> None:
    """Release every lock this process holds: for exits that skip ``atexit`` (``os._exit`` after an error report)."""
    for lock in list(_HELD):
        lock.release()
