"""Checkpointing of a whole training state (model, optimizer, trainer) with opt-in resume."""

from __future__ import annotations

import contextlib
import copy
import glob
import logging
import os
import re
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver

__all__ = ["TrainingCheckpoint", "RunFolderInUseError", "latest_checkpoint", "BEST_MODEL"]

#: file name of a run's best model (the bundles' ``CheckpointSaver`` ``key_metric_filename``)
BEST_MODEL = "model.pt"


class RunFolderInUseError(FileExistsError):
    """A new training run was pointed at a folder that holds another run's checkpoints or best model."""


logger = logging.getLogger(__name__)


def latest_checkpoint(directory: str | os.PathLike, prefix: str = "checkpoint") -> str:
    """Path of the newest ``<prefix>_*=N.pt`` (highest N) that MONAI's ``CheckpointSaver`` wrote in ``directory``.

    Returns an empty string when there is none.
    """
    best, best_n = "", -1
    for path in glob.glob(os.path.join(str(directory), f"{prefix}_*.pt")):
        match = re.search(r"=(\d+)\.pt$", os.path.basename(path))
        n = int(match.group(1)) if match else 0
        if n > best_n:
            best, best_n = path, n
    return best


class TrainingCheckpoint:
    """Save ``{model, optimizer, trainer[, lr_scheduler]}`` every ``interval`` epochs; optionally resume first.

    A bundle config cannot name the trainer inside the trainer's own handler list (MONAI's config resolver
    rejects the circular reference), so this handler receives the trainer in :meth:`attach` and builds MONAI's
    ``CheckpointSaver`` / ``CheckpointLoader`` there.

    Args:
        save_dir: folder of the ``checkpoint_epoch=N.pt`` files (the run's ``output_dir``).
        network, optimizer, lr_scheduler: objects whose ``state_dict`` is saved.
        resume: restore the newest checkpoint in ``save_dir`` before training (warns and starts afresh if none).
            A schedule whose length is fixed at construction (``OneCycleLR.total_steps``, derived from
            ``max_epochs`` in the configs) keeps the length of the *resumed* run's config, so a run can be resumed
            with more epochs; the position in the schedule (its step count) comes from the checkpoint.
        interval: save every ``interval`` epochs; ``n_saved`` newest files are kept.
        overwrite: a new run (``resume`` false) refuses a ``save_dir`` that already holds another run's
            ``checkpoint_*.pt`` or best ``model.pt`` (:class:`RunFolderInUseError`), so no run silently replaces
            weights it did not write; ``overwrite=True`` deletes those files first.
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
    ) -> None:
        self.save_dir = str(save_dir)
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.resume = resume
        self.interval = interval
        self.n_saved = n_saved
        self.overwrite = overwrite

    def _keep_schedule_length(self, engine: Engine) -> None:
        sched = self.lr_scheduler
        if sched is None or not hasattr(sched, "total_steps"):
            return
        length = {k: copy.deepcopy(getattr(sched, k)) for k in ("total_steps", "_schedule_phases") if hasattr(sched, k)}

        def restore(_: Engine) -> None:  # fires after the loader (same event, registered later)
            for k, v in length.items():
                setattr(sched, k, v)

        engine.add_event_handler(Events.STARTED, restore)

    def _previous_run_files(self) -> list[str]:
        files = glob.glob(os.path.join(self.save_dir, "checkpoint_*.pt"))
        files += glob.glob(os.path.join(self.save_dir, BEST_MODEL))
        return sorted(files)

    def _claim_folder(self) -> None:
        previous = self._previous_run_files()
        if not previous:
            return
        if not self.overwrite:
            names = ", ".join(os.path.basename(f) for f in previous)
            raise RunFolderInUseError(
                f"{self.save_dir} already holds another training run ({names}): pass a new --output_dir, "
                "--resume True to continue that run, or --overwrite True to replace it"
            )
        for f in previous:
            logger.warning("overwrite: deleting %s of the previous run", f)
            with contextlib.suppress(FileNotFoundError):  # another rank of a distributed run was first
                os.remove(f)

    def attach(self, engine: Engine) -> None:
        if not self.resume:  # checked when training starts: building the trainer (a config check) writes nothing
            engine.add_event_handler(Events.STARTED, lambda _: self._claim_folder())
        state: dict[str, Any] = {"model": self.network, "optimizer": self.optimizer, "trainer": engine}
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler
        if self.resume:
            path = latest_checkpoint(self.save_dir)
            if path:
                logger.info("resuming training from %s", path)
                CheckpointLoader(load_path=path, load_dict=state, map_location="cpu").attach(engine)
                self._keep_schedule_length(engine)
            else:
                logger.warning("resume requested but %s holds no checkpoint_*.pt: training from scratch", self.save_dir)
        # created on every rank of a distributed run: Ignite's saver synchronises ranks and writes on rank 0 only
        CheckpointSaver(
            save_dir=self.save_dir,
            save_dict=state,
            save_interval=self.interval,
            n_saved=self.n_saved,
            epoch_level=True,
        ).attach(engine)
