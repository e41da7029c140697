"""Checkpointing of a whole training state (model, optimizer, trainer, random generators and data pipeline) with
opt-in resume of the same run only."""

from __future__ import annotations

import contextlib
import copy
import glob
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver

from cellseg_monai.data.io import OverwriteError
from cellseg_monai.guards.lock import RunLock
from cellseg_monai.handlers.pipeline_state import PipelineState
from cellseg_monai.handlers.run_record import (
    RUN_FILE,
    RunMismatchError,
    check_same_run,
    read_run_file,
    write_run_file,
)

__all__ = [
    "BEST_MODEL",
    "NothingToResumeError",
    "RunFolderInUseError",
    "TrainingCheckpoint",
    "checkpoint_epoch",
    "latest_checkpoint",
]

#: file name of a run's best model (the bundles' ``CheckpointSaver`` ``key_metric_filename``)
BEST_MODEL = "model.pt"


class RunFolderInUseError(OverwriteError):
    """A new training run was pointed at a folder that holds another run's checkpoints or best model."""


class NothingToResumeError(ValueError):
    """``--resume`` found a checkpoint that already reached the ``max_epochs`` asked for."""


logger = logging.getLogger(__name__)


def latest_checkpoint(directory: str | os.PathLike, prefix: str = "checkpoint") -> str:
    """Path of the newest ``<prefix>_*=N.pt`` (highest N) that MONAI's ``CheckpointSaver`` wrote in ``directory``.

    Returns an empty string when there is none.
    """
    best, best_n = "", -1
    for path in glob.glob(os.path.join(str(directory), f"{prefix}_*.pt")):
        n = checkpoint_epoch(path)
        if n > best_n:
            best, best_n = path, n
    return best


def checkpoint_epoch(path: str | os.PathLike) -> int:
    """The epoch N of a ``checkpoint_epoch=N.pt`` file name (0 when the name has none)."""
    match = re.search(r"=(\d+)\.pt$", os.path.basename(str(path)))
    return int(match.group(1)) if match else 0


def _training_parts(engine: Engine) -> list[Any]:
    """What a trainer draws random numbers from besides the global generators: its data loader (dataset transforms,
    sampler), batch preparation, loss and inferer."""
    return [getattr(engine, name, None) for name in ("data_loader", "prepare_batch", "loss_function", "inferer")]


class _BestModelRecord:
    """The (score, file) list of the best models that MONAI's key-metric ``CheckpointSaver`` keeps, as a checkpoint
    entry: a resumed run then replaces ``model.pt`` only by a better model, as the uninterrupted run would, not by
    the first one it validates."""

    def __init__(self, saver: CheckpointSaver) -> None:
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        tracker = getattr(self.saver, "_key_metric_checkpoint", None)
        saved = tracker.state_dict()["_saved"] if tracker is not None else []
        return {"saved": [[float(score), str(filename)] for score, filename in saved]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.saver.load_state_dict({"_saved": [(score, filename) for score, filename in state["saved"]]})


class TrainingCheckpoint:
    """Save ``{model, optimizer, trainer[, lr_scheduler], pipeline}`` every ``interval`` epochs; optionally resume first.

    A bundle config cannot name the trainer inside the trainer's own handler list (MONAI's config resolver
    rejects the circular reference), so this handler receives the trainer in :meth:`attach` and builds MONAI's
    ``CheckpointSaver`` / ``CheckpointLoader`` there. ``pipeline`` is a :class:`~cellseg_monai.handlers.
    pipeline_state.PipelineState` of the trainer's data loader, batch preparation, loss and inferer, so that a resumed
    run draws the same random numbers, and its transforms remember the same samples, as the uninterrupted one
    (bit-identical weights on CPU).

    Everything below is checked when training starts (building the trainer, a config check, writes nothing).
    First of all, the run takes the folder's lock (:class:`~cellseg_monai.guards.lock.RunLock`, rank 0): a second
    training started into the same ``save_dir`` while this one runs is refused
    (:class:`~cellseg_monai.guards.lock.FolderInUseError`) before it reads, deletes or writes anything there; the lock
    is released when training completes or is terminated, and at process exit; a lock left by a killed run is taken
    over (so ``--resume`` after a kill works).

    Args:
        save_dir: folder of the ``checkpoint_epoch=N.pt`` files (the run's ``output_dir``).
        network, optimizer, lr_scheduler: objects whose ``state_dict`` is saved.
        resume: restore the newest checkpoint in ``save_dir`` before training. Refused
            (:class:`~cellseg_monai.handlers.run_record.RunMismatchError`) when ``run_identity`` is given and the
            folder's ``run.json`` records another run, or the folder has checkpoints but no ``run.json`` (a run of
            unknown origin); refused (:class:`NothingToResumeError`) when the checkpoint's epoch is at or past
            ``max_epochs``. Without a checkpoint the run starts afresh like a new run. A schedule whose length is
            fixed at construction (``OneCycleLR.total_steps``, derived from ``max_epochs`` in the configs, and
            ``BudgetOneCycleLR.minutes``) keeps the length of the *resumed* run's config, so a run can be resumed
            with more epochs or minutes; the position in the schedule (its step count and training time) comes from
            the checkpoint.
        interval: save every ``interval`` epochs; ``n_saved`` newest files are kept.
        overwrite: a new run refuses a ``save_dir`` that already holds another run's ``checkpoint_*.pt`` or best
            ``model.pt`` (:class:`RunFolderInUseError`), so no run silently replaces weights it did not write;
            ``overwrite=True`` deletes those files first.
        run_identity: what this run is (:func:`~cellseg_monai.handlers.run_record.run_identity`): a new run
            writes it to ``<save_dir>/run.json`` (atomically, rank 0), a resumed one must match it. None: no
            ``run.json`` is written or checked.
        best_model: the validator's key-metric ``CheckpointSaver`` (``model.pt``): its record of the best score is
            saved too, so that a resumed run keeps the best model of the epochs before the interruption.
    """

    def __init__(
        self,
        save_dir: str,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any | None = None,
        resume: bool = False,
        interval: int = 1,
        n_saved: int = 1,
        overwrite: bool = False,
        run_identity: Mapping[str, Any] | None = None,
        best_model: CheckpointSaver | None = None,
    ) -> None:
        self.save_dir = str(save_dir)
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.resume = resume
        self.interval = interval
        self.n_saved = n_saved
        self.overwrite = overwrite
        self.run_identity = dict(run_identity) if run_identity is not None else None
        self.best_model = best_model
        self._state: dict[str, Any] = {}
        self._lock = RunLock(self.save_dir, "training")

    def _keep_schedule_length(self, load: Any, engine: Engine) -> None:
        """Run ``load(engine)`` but keep the scheduler's length from this run's config."""
        sched = self.lr_scheduler
        keys = ("total_steps", "_schedule_phases", "minutes")
        length = {k: copy.deepcopy(getattr(sched, k)) for k in keys if sched is not None and hasattr(sched, k)}
        load(engine)
        for k, v in length.items():
            setattr(sched, k, v)

    def _previous_run_files(self) -> list[str]:
        files = glob.glob(os.path.join(self.save_dir, "checkpoint_*.pt"))
        files += glob.glob(os.path.join(self.save_dir, BEST_MODEL))
        return sorted(files)

    def _claim_folder(self, same_run: bool = False) -> None:
        """Make ``save_dir`` this run's: refuse (or with ``overwrite`` delete) another run's files, record the run.

        ``same_run``: the folder's ``run.json`` records this very run (resumed before its first checkpoint), whose
        files it may replace.
        """
        previous = [] if same_run else self._previous_run_files()
        if previous and not self.overwrite:
            names = ", ".join(os.path.basename(f) for f in previous)
            raise RunFolderInUseError(
                f"{self.save_dir} already holds another training run ({names}): pass a new --output_dir, "
                "--resume True to continue that run, or --overwrite True to replace it"
            )
        for f in previous:
            logger.warning("overwrite: deleting %s of the previous run", f)
            with contextlib.suppress(FileNotFoundError):  # another rank of a distributed run was first
                os.remove(f)
        if self.run_identity is not None and idist.get_rank() == 0:
            write_run_file(self.save_dir, self.run_identity)

    def _recorded_is_this_run(self) -> bool:
        if self.run_identity is None:
            return False
        recorded = read_run_file(self.save_dir)
        if recorded is None:
            return False
        with contextlib.suppress(RunMismatchError):
            check_same_run(recorded, self.run_identity, self.save_dir)
            return True
        return False

    def _check_resumable(self, path: str, engine: Engine) -> None:
        if self.run_identity is not None:
            recorded = read_run_file(self.save_dir)
            if recorded is None:
                raise RunMismatchError(
                    f"{os.path.join(self.save_dir, RUN_FILE)}: --resume refused, the folder holds checkpoints "
                    f"({os.path.basename(path)}) but no record of the run that wrote them, so it cannot be checked "
                    "to be this run; start a new run in another --output_dir"
                )
            check_same_run(recorded, self.run_identity, self.save_dir)
        epoch, max_epochs = checkpoint_epoch(path), engine.state.max_epochs
        if max_epochs is not None and epoch >= max_epochs:
            raise NothingToResumeError(
                f"{path}: nothing to resume: checkpoint epoch {epoch} \u2265 max_epochs {max_epochs}; pass a larger "
                "--train#trainer#max_epochs to train on"
            )

    def _release(self, engine: Engine | None = None) -> None:
        self._lock.release()

    def _start(self, engine: Engine) -> None:
        if idist.get_rank() == 0:
            self._lock.acquire()
        try:
            self._resume_or_claim(engine)
        except BaseException:
            self._lock.release()  # refused at start: leave the folder as it was, without a lock file
            raise

    def _resume_or_claim(self, engine: Engine) -> None:
        path = latest_checkpoint(self.save_dir) if self.resume else ""
        if not path:
            if self.resume:
                logger.warning("resume requested but %s holds no checkpoint_*.pt: training from scratch", self.save_dir)
            self._claim_folder(same_run=self.resume and self._recorded_is_this_run())
            return
        self._check_resumable(path, engine)
        logger.info("resuming training from %s", path)
        loader = CheckpointLoader(load_path=path, load_dict=self._state, map_location="cpu")
        loader.logger = engine.logger
        self._keep_schedule_length(loader, engine)

    def attach(self, engine: Engine) -> None:
        self._state = {"model": self.network, "optimizer": self.optimizer, "trainer": engine}
        if self.lr_scheduler is not None:
            self._state["lr_scheduler"] = self.lr_scheduler
        self._state["pipeline"] = PipelineState(lambda: _training_parts(engine))
        if self.best_model is not None:
            self._state["best_model"] = _BestModelRecord(self.best_model)
        engine.add_event_handler(Events.STARTED, self._start)
        # not on EXCEPTION_RAISED: a handler there would change how Ignite re-raises; the lock goes at exit then
        engine.add_event_handler(Events.COMPLETED | Events.TERMINATE, self._release)
        # created on every rank of a distributed run: Ignite's saver synchronises ranks and writes on rank 0 only
        CheckpointSaver(
            save_dir=self.save_dir,
            save_dict=self._state,
            save_interval=self.interval,
            n_saved=self.n_saved,
            epoch_level=True,
        ).attach(engine)
