"""The run lock (issue 13, concurrent runs into one folder): one holder at a time, checked with real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cellseg_monai.data.io import OverwriteError
from cellseg_monai.guards.lock import LOCK_FILE, FolderInUseError, RunLock, hold_folder, lock_holder, release_held

REPO = Path(__file__).resolve().parents[2]

# a child that takes the lock of argv[1], says so on stdout, then waits for stdin to close (or exits at once: argv[2])
# It imports only the lock module (and data/io.py, where OverwriteError lives), not the package with torch and MONAI,
# so that many such processes start in well under a second.
_HOLDER = textwrap.dedent(
    """
    import sys, types
    from pathlib import Path
    root = Path.cwd() / "cellseg_monai"
    for name, path in (("cellseg_monai", root), ("cellseg_monai.data", root / "data"), ("cellseg_monai.guards", root / "guards")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
    from cellseg_monai.guards.lock import RunLock, FolderInUseError
    try:
        lock = RunLock(sys.argv[1], "holder").acquire()
    except FolderInUseError as e:
        print("refused", e, flush=True)
        sys.exit(2)
    print("held", flush=True)
    if sys.argv[2] == "wait":
        sys.stdin.read()
    """
)


def _child(folder: Path, mode: str = "wait") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder), mode],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_holder_then_free_again(tmp_path):
    folder = tmp_path / "out"
    with hold_folder(folder, "segment") as lock:
        assert lock.held
        holder = lock_holder(folder)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["command"] == "segment"
    assert not (folder / LOCK_FILE).exists() and lock_holder(folder) is None


def test_second_process_refused_with_the_holder_named(tmp_path):
    folder = tmp_path / "out"
    holder = _child(folder)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUseError) as info:
            RunLock(folder).acquire()
        message = str(info.value)
        assert message.startswith(f"{folder / LOCK_FILE}: {folder} is in use by another run (pid {holder.pid} on ")
        assert "(holder)" in message
        assert isinstance(info.value, OverwriteError)  # exit code 2 on the command line
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert holder.returncode == 0
    assert not (folder / LOCK_FILE).exists()  # released at the holder's exit
    with RunLock(folder):  # free again
        pass


def test_stale_lock_of_a_dead_process_is_named_and_taken_over(tmp_path, caplog):
    folder = tmp_path / "out"
    folder.mkdir()
    pid = _dead_pid()
    stale = {"pid": pid, "host": socket.gethostname(), "start": None, "command": "training", "created": 0.0}
    (folder / LOCK_FILE).write_text(json.dumps(stale))
    with caplog.at_level("WARNING"), RunLock(folder):
        assert lock_holder(folder)["pid"] == os.getpid()
    assert f"taking over a stale lock of pid {pid} on {socket.gethostname()}" in caplog.text
    assert str(folder / LOCK_FILE) in caplog.text


def test_reused_pid_is_stale(tmp_path):
    """Our own pid, but another start time: the process that wrote the lock is gone and its pid was reused."""
    folder = tmp_path / "out"
    folder.mkdir()
    reused = {"pid": os.getpid(), "host": socket.gethostname(), "start": -1, "created": 0.0}
    (folder / LOCK_FILE).write_text(json.dumps(reused))
    with RunLock(folder):
        assert lock_holder(folder)["start"] != -1


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    other = {"pid": _dead_pid(), "host": "elsewhere.example", "start": None, "created": 0.0}
    (folder / LOCK_FILE).write_text(json.dumps(other))
    with pytest.raises(FolderInUseError, match="elsewhere.example.*cannot check whether it still runs"):
        RunLock(folder).acquire()
    assert json.loads((folder / LOCK_FILE).read_text()) == other


def test_unreadable_lock_is_refused_not_deleted(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_FILE).write_text("garbage")
    with pytest.raises(FolderInUseError, match="unreadable"):
        RunLock(folder).acquire()
    assert (folder / LOCK_FILE).read_text() == "garbage"


def test_release_leaves_a_lock_it_does_not_hold(tmp_path):
    folder = tmp_path / "out"
    lock = RunLock(folder).acquire()
    other = {"pid": 1, "host": "elsewhere.example", "created": 1.0}
    (folder / LOCK_FILE).write_text(json.dumps(other))  # e.g. a user deleted ours and another run took the folder
    lock.release()
    assert json.loads((folder / LOCK_FILE).read_text()) == other


def test_release_held_releases_every_lock_of_the_process(tmp_path):
    a, b = RunLock(tmp_path / "a").acquire(), RunLock(tmp_path / "b").acquire()
    release_held()
    assert not a.held and not b.held
    assert not any((tmp_path / n / LOCK_FILE).exists() for n in "ab")


def test_processes_started_together_get_exactly_one_lock(tmp_path):
    """Eight processes race for one folder (and for one stale lock): exactly one holds it, the others are refused."""
    folder = tmp_path / "out"
    folder.mkdir()
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "start": None, "created": 0.0}
    (folder / LOCK_FILE).write_text(json.dumps(stale))
    racers = [_child(folder) for _ in range(8)]
    try:
        answers = [p.stdout.readline().split()[0] for p in racers]
        assert sorted(answers) == ["held"] + ["refused"] * 7
        winner = racers[answers.index("held")]
        assert lock_holder(folder)["pid"] == winner.pid
    finally:
        for p in racers:
            p.stdin.close()
        deadline = time.monotonic() + 60
        for p in racers:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    assert sorted(p.returncode for p in racers) == [0] + [2] * 7
    assert not (folder / LOCK_FILE).exists()


def test_folder_made_for_the_lock_goes_if_nothing_was_written(tmp_path):
    with RunLock(tmp_path / "new"):
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()
    with RunLock(tmp_path / "used"):
        (tmp_path / "used" / "a.tif").write_bytes(b"x")
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["a.tif"]
    (tmp_path / "old").mkdir()
    with RunLock(tmp_path / "old"):
        pass
    assert (tmp_path / "old").is_dir()  # not made by the lock: kept, empty or not
