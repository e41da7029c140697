"""Safe-by-default training (issue 13) through ``python -m monai.bundle run``, as users run it:

- an interrupted training resumed with ``--resume True`` ends with the very weights of an uninterrupted one (CPU),
  whether it stopped right after a checkpoint or was killed (SIGKILL) in the middle of an epoch;
- ``--resume`` refuses a folder of another run;
- a bad file in the dataset ends the training with one line ``error: <file>: <problem>`` and exit code 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from tests.bundles.conftest import REPO, make_disc_dataset

pytestmark = pytest.mark.slow

UNET = REPO / "bundles" / "supervised_unet"
LACSS = REPO / "bundles" / "lacss"
# tiny and fast; every option equal in the runs that are compared
SMALL = ["--val_interval", "1", "--num_samples", "2", "--patch_size", "[64, 64]"]
UNET_SMALL = [*SMALL, "--network_def#features", "[4, 8, 8, 16, 16, 4]"]
LACSS_SMALL = [*SMALL, "--network_def#features", "[8, 16, 32]", "--network_def#feature_channels", "8"]
# index of ignite's ProgressBar in supervised_unet's train#handlers, replaced by the pause handler
PROGRESS_BAR = [
    h.get("_target_") for h in json.loads((UNET / "configs" / "train.json").read_text())["train"]["handlers"]
].index("ignite.handlers.ProgressBar")


def _command(bundle: Path, dataset: Path, out: Path, *args: str) -> list[str]:
    config = str(bundle / "configs" / "train.json")
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        config,
        "--dataset_dir",
        str(dataset),
        "--output_dir",
        str(out),
        *args,
    ]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("CELLSEG_DEBUG", None)
    return env


def _train(bundle: Path, dataset: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = _command(bundle, dataset, out, *args)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=_env(), timeout=900)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{' '.join(proc.args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _weights(out: Path, epoch: int) -> dict[str, torch.Tensor]:
    return torch.load(out / f"checkpoint_epoch={epoch}.pt", map_location="cpu", weights_only=True)["model"]


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"weights differ: {differing}"


def _pause(folder: Path, paused: bool = True) -> tuple[Path, list[str]]:
    """The override that replaces the progress bar by :class:`tests.bundles.interrupt.PauseOnce` (in every run, so
    that the runs compared differ only in their marker file), and that marker (already there: no pause)."""
    marker = folder / "paused"
    if not paused:
        marker.write_text("no pause")
    handler = {"_target_": "tests.bundles.interrupt.PauseOnce", "marker": str(marker), "epoch": 2}
    return marker, [f"--train#handlers#{PROGRESS_BAR}", repr(handler)]


@pytest.fixture(scope="module")
def uninterrupted(disc_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    _, override = _pause(out.parent, paused=False)
    _ok(_train(UNET, disc_dataset, out, "--train#trainer#max_epochs", "3", *UNET_SMALL, *override))
    return out


def test_stopped_after_a_checkpoint_then_resumed_equals_uninterrupted(disc_dataset, tmp_path, uninterrupted):
    """The run stops cleanly right after its epoch-1 checkpoint (same config, ``max_epochs`` 3: the learning-rate
    schedule spans the whole run, so a run stopped by a smaller ``max_epochs`` would have followed another one)."""
    marker = tmp_path / "stopped"
    stop = {"_target_": "tests.bundles.interrupt.StopOnce", "marker": str(marker), "epoch": 1}
    override = [f"--train#handlers#{PROGRESS_BAR}", repr(stop)]
    out = tmp_path / "run"
    _ok(_train(UNET, disc_dataset, out, "--train#trainer#max_epochs", "3", *UNET_SMALL, *override))
    assert marker.read_text().split()[0] == "1"
    assert [p.name for p in out.glob("checkpoint_*.pt")] == ["checkpoint_epoch=1.pt"]  # stopped after epoch 1
    identity = json.loads((out / "run.json").read_text())
    assert (identity["bundle"], identity["train_ids"], identity["seed"]) == (
        "supervised_unet",
        ["img0", "img1", "img2"],
        0,
    )
    _ok(_train(UNET, disc_dataset, out, "--train#trainer#max_epochs", "3", "--resume", "True", *UNET_SMALL, *override))
    _assert_identical(_weights(out, 3), _weights(uninterrupted, 3))


def test_killed_mid_epoch_then_resumed_equals_uninterrupted(disc_dataset, tmp_path, uninterrupted):
    marker, override = _pause(tmp_path)
    out = tmp_path / "run"
    cmd = _command(UNET, disc_dataset, out, "--train#trainer#max_epochs", "3", *UNET_SMALL, *override)
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"the training never reached epoch 2 (exit code {proc.poll()})"
    finally:
        proc.kill()  # SIGKILL: no handler, no clean-up
        proc.wait()
    assert proc.returncode == -9
    epoch, iteration = map(int, marker.read_text().split())
    assert epoch == 2 and iteration > 0
    assert [p.name for p in out.glob("checkpoint_*.pt")] == ["checkpoint_epoch=1.pt"]  # killed inside epoch 2
    _ok(_train(UNET, disc_dataset, out, "--train#trainer#max_epochs", "3", "--resume", "True", *UNET_SMALL, *override))
    _assert_identical(_weights(out, 3), _weights(uninterrupted, 3))


def _run_files(folder: Path) -> dict[str, bytes]:
    """The run's files (weights, checkpoints, run.json) but not TensorBoard's event files (each start adds one)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith("events.out.tfevents")}


def _last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.splitlines()[-1]


def test_resume_refuses_another_run_and_a_finished_one(disc_dataset, uninterrupted):
    _, override = _pause(uninterrupted.parent, paused=False)
    before = _run_files(uninterrupted)
    other = _train(
        UNET,
        disc_dataset,
        uninterrupted,
        "--train#trainer#max_epochs",
        "5",
        "--resume",
        "True",
        *UNET_SMALL,
        *override,
        "--learning_rate",
        "0.01",
    )
    assert other.returncode == 2
    assert _last_line(other) == (
        f"error: {uninterrupted / 'run.json'}: --resume refused, this folder holds another run: the config differs at "
        "learning_rate (run: 0.001, now: 0.01); resume with the run's own settings, or start a new run in another "
        "--output_dir"
    )
    done = _train(
        UNET, disc_dataset, uninterrupted, "--train#trainer#max_epochs", "3", "--resume", "True", *UNET_SMALL, *override
    )
    assert done.returncode == 2
    assert _last_line(done) == (
        f"error: {uninterrupted / 'checkpoint_epoch=3.pt'}: nothing to resume: checkpoint epoch 3 \u2265 max_epochs 3; "
        "pass a larger --train#trainer#max_epochs to train on"
    )
    for proc in (other, done):
        assert "Traceback" not in proc.stderr + proc.stdout
    assert _run_files(uninterrupted) == before


# --- bad data: one line naming the file, exit code 1 ------------------------------------------------------------------


def _label_of_another_size(root: Path) -> tuple[str, list[str]]:
    tifffile.imwrite(root / "labels" / "img1.tif", np.ones((50, 40), np.uint16))
    image, label = root / "images" / "img1.tif", root / "labels" / "img1.tif"
    return f"{label}: label has height x width (50, 40) but image {image} has (96, 80)", []


def _nan_image(root: Path) -> tuple[str, list[str]]:
    tifffile.imwrite(root / "images" / "img2.tif", np.full((96, 80), np.nan, np.float32))
    return (
        f"{root / 'images' / 'img2.tif'}: image has 23040 NaN or infinite value(s) (of 23040); replace them (e.g. by 0) "
        "or leave the image out"
    ), []


def _id_in_train_and_val(root: Path) -> tuple[str, list[str]]:
    (root / "split.json").write_text(json.dumps({"train": ["img0", "img1", "img2", "img3"], "val": ["img3", "img4"]}))
    return (f"{root / 'split.json'}: 1 id(s) in both 'train' and 'val': img3; an image may be in one split only"), []


def _points_csv_with_other_columns(root: Path) -> tuple[str, list[str]]:
    (root / "weak" / "points").mkdir(parents=True)
    for i in range(5):
        (root / "weak" / "points" / f"img{i}.csv").write_text("y,x\n20,30\n50,40\n")
    (root / "weak" / "points" / "img1.csv").write_text("row,col\n20,30\n")
    csv = root / "weak" / "points" / "img1.csv"
    return f"{csv}: points CSV needs a header with columns 'y' and 'x'; got ['row', 'col']", [
        "--points_source",
        "files",
    ]


@pytest.mark.parametrize(
    "bundle, spoil",
    [
        (UNET, _label_of_another_size),
        (UNET, _nan_image),
        (UNET, _id_in_train_and_val),
        (LACSS, _points_csv_with_other_columns),
    ],
    ids=lambda x: x.name if isinstance(x, Path) else x.__name__.strip("_"),
)
def test_bad_data_ends_training_with_one_line(tmp_path, bundle, spoil):
    root = make_disc_dataset(tmp_path / "data")
    problem, args = spoil(root)
    small = UNET_SMALL if bundle == UNET else LACSS_SMALL
    proc = _train(bundle, root, tmp_path / "out", "--train#trainer#max_epochs", "1", *small, *args)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert _last_line(proc) == f"error: {problem}"
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "terminate called" not in proc.stderr


def test_lacss_trains_on_an_image_without_cells(tmp_path):
    """A batch without instances (an empty label, a crop of background) used to end the training in MONAI's
    decollation of the output (IndexError)."""
    root = make_disc_dataset(tmp_path / "data")
    for i in range(3):
        tifffile.imwrite(root / "labels" / f"img{i}.tif", np.zeros((96, 80), np.uint16))
    _ok(_train(LACSS, root, tmp_path / "out", "--train#trainer#max_epochs", "1", *LACSS_SMALL))
    assert (tmp_path / "out" / "checkpoint_epoch=1.pt").is_file()


# --- concurrent runs into one folder: the second is refused, the first run's files are untouched ----------------------


def _file_md5s(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_second_training_into_a_running_runs_folder_is_refused(disc_dataset, tmp_path):
    import socket

    marker = tmp_path / "paused"
    pause = {"_target_": "tests.bundles.interrupt.PauseOnce", "marker": str(marker), "epoch": 1}
    override = [f"--train#handlers#{PROGRESS_BAR}", repr(pause)]
    out = tmp_path / "run"
    args = ("--train#trainer#max_epochs", "1", *UNET_SMALL, *override)
    first = subprocess.Popen(
        _command(UNET, disc_dataset, out, *args),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"the first training never started (exit code {first.poll()})"
        before = _file_md5s(out)
        assert ".cellseg-run.lock" in before and "run.json" in before
        for extra in ([], ["--overwrite", "True"]):  # --overwrite would delete the first run's files
            second = _train(UNET, disc_dataset, out, *args, *extra)
            assert second.returncode == 2, second.stderr[-2000:]
            assert _last_line(second).startswith(
                f"error: {out / '.cellseg-run.lock'}: {out} is in use by another run (pid {first.pid} on "
                f"{socket.gethostname()} since "
            ), _last_line(second)
            assert "Traceback" not in second.stderr + second.stdout
            after = _file_md5s(out)
            assert {k: after.get(k) for k in before} == before  # the first run's files, byte for byte
            assert first.poll() is None  # and the first run goes on
    finally:
        first.kill()
        first.wait()
