"""Training of one cellseg-monai bundle through MONAI Label: fine-tune the served weights on the labels that
annotators saved in the datastore, and serve the result only if it is better.

``POST /train/<bundle>`` (options in the request body, all optional: ``max_epochs`` (10), ``val_fraction`` (0.2),
``seed`` (0), ``overrides`` (``{config id: value}`` for the bundle's ``train.json``)):

1. the datastore's labelled images become a dataset in the standard layout
   (:func:`cellseg_monai.annotations.write_training_dataset`) under ``<models_dir>/<bundle>/runs/<time>/dataset``:
   the saved label is read as the bundle's kind of annotation (:data:`TRAIN_KINDS`): scribbles for ImPartial
   (0 unlabelled, 1 background, 2.. classes; no outlines needed), a dot per cell for LACSS (values 2..; 1 is
   ignored, so a scribble image serves too; the foreground mask is a threshold of the image), instance ids (or a
   mask, split into its connected components) for the others — for ``partial_maskrcnn`` only the nuclei the
   annotator outlined, all of them (``annotation_budget`` 1.0);
2. the bundle's own ``configs/train.json`` runs as a child process (``python -m monai.bundle run``) from the served
   weights (``--init_ckpt``), with ``val_interval`` 1: its key metric picks the best epoch (ImPartial: pixel F1 on
   the held-out images' scribbles — what the annotator drew, nothing more); ``overrides`` may not change the
   network (the served weights must load) nor what the task sets;
3. the candidate and the served weights are both scored on the same held-out images with the bundle's
   ``evaluate.json`` (its key metric, the same overrides); the candidate replaces the served model
   (``<models_dir>/<bundle>/model.pt``, written to a temporary name and renamed) only if it scores higher. With a
   single labelled image there is nothing to hold out: both are scored on that image (``"held_out": false`` in the
   reply), so "higher" means "fits the annotation better". The bundle's shipped ``models/model.pt`` is never
   written: it is what is served until a training has done better. One training per bundle runs at a time.

Everything a run writes stays in its run folder (``result.json`` records the scores and the decision); nothing is
written into the bundle folders.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import logging
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from cellseg_monai.annotations import write_training_dataset
from cellseg_monai.annotations.viewer import SINGLE_VAL_SUFFIX
from cellseg_monai.data.io import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["TRAIN_KINDS", "CellSegBundleTrainTask", "served_model_path"]

#: what an annotator saves for each bundle (``instances`` for every bundle not listed)
TRAIN_KINDS = {"impartial": "scribbles", "lacss": "points"}

#: config ids a request may not override: the task sets them
_SET_BY_TASK = {
    "dataset_dir",
    "output_dir",
    "ckpt_dir",
    "init_ckpt",
    "bundle_root",
    "val_interval",
    "train#trainer#max_epochs",
    "annotation_budget",
}
#: how each kind's dataset is read: load_datalist's ``labels_or``
_LABELS_OR = {"scribbles": "scribble", "points": "points"}


def served_model_path(models_dir: Path, name: str) -> Path:
    """Where the model a training made better is served from (the shipped weights are served until it exists)."""
    return models_dir / name / "model.pt"


class CellSegBundleTrainTask(TrainTask):
    """Fine-tune ``bundles/<name>`` on the datastore's labels; serve the result only if it scores higher.

    Args:
        bundle: the bundle folder.
        models_dir: where served models and training runs go (``<models_dir>/<name>/``).
    """

    def __init__(self, bundle: Path, models_dir: Path) -> None:
        self.bundle = Path(bundle).resolve()
        self.name = self.bundle.name
        self.kind = TRAIN_KINDS.get(self.name, "instances")
        self.models_dir = Path(models_dir)
        train = json.loads((self.bundle / "configs" / "train.json").read_text())
        self.key_metric = next(iter(train["validate"]["key_metric"]))
        # the outlines a user saved are all meant: a bundle that keeps a fraction of simulated ones keeps them all
        self.full_budget = self.kind == "instances" and "annotation_budget" in train
        super().__init__(
            f"Fine-tune {self.name} on the saved labels ({self.kind}), from the served weights; the result is served "
            f"only if its {self.key_metric} on held-out images beats the served model's"
        )

    def config(self) -> dict[str, Any]:
        return {"max_epochs": 10, "val_fraction": 0.2, "seed": 0, "annotation": self.kind}

    @property
    def served(self) -> Path:
        path = served_model_path(self.models_dir, self.name)
        return path if path.is_file() else self.bundle / "models" / "model.pt"

    def stats(self) -> dict[str, Any]:
        runs = sorted((self.models_dir / self.name / "runs").glob("*/result.json"))
        return json.loads(runs[-1].read_text()) if runs else {}

    def _bundle_run(self, configs: list[str], args: list[str], log: Path) -> None:
        files = [str(self.bundle / "configs" / c) for c in configs]
        config = files[0] if len(files) == 1 else str(files)
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--bundle_root", str(self.bundle)]
        with open(log, "w") as out:
            proc = subprocess.run([*cmd, *args], stdout=out, stderr=subprocess.STDOUT, cwd=str(log.parent))
        if proc.returncode:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:])
            raise RuntimeError(f"{self.name}: {' '.join(configs)} failed (exit {proc.returncode}), log {log}:\n{tail}")

    def _reading(self) -> list[str]:
        """Overrides that make the bundle read the dataset's kind of annotation, all of it."""
        if self.kind == "points":
            return ["--points_source", "files", "--mask_source", "threshold"]
        return ["--annotation_budget", "1.0"] if self.full_budget else []

    def _score(self, weights: Path, dataset: Path, eval_dir: Path, extra: list[str]) -> float | None:
        """The key metric of ``weights`` on the dataset's ``val`` images; None when it is not a number."""
        args = ["--dataset_dir", str(dataset), "--ckpt_path", str(weights), "--eval_dir", str(eval_dir)]
        args += ["--eval_split", "val", *self._reading(), *extra]
        if self.kind in _LABELS_OR:
            datalist = (
                f"$cellseg_monai.data.load_datalist(@dataset_dir, @eval_split, labels_or='{_LABELS_OR[self.kind]}')"
            )
            args += ["--validate#datalist", datalist]
        self._bundle_run(["train.json", "evaluate.json"], args, eval_dir.with_name(eval_dir.name + ".log"))
        with open(eval_dir / "metrics.csv", newline="") as f:
            values = {row[0]: float(row[1]) for row in csv.reader(f) if len(row) >= 2}
        if self.key_metric not in values:
            raise RuntimeError(f"{eval_dir / 'metrics.csv'}: no {self.key_metric}")
        value = values[self.key_metric]
        return None if math.isnan(value) else value

    @contextlib.contextmanager
    def _one_training(self):
        """One training per bundle at a time: a second request is refused while one runs (its comparison with the
        served model and the replacement would race)."""
        lock = self.models_dir / self.name / ".train.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"{self.name}: a training is running already; wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _new_run_folder(self) -> Path:
        runs = self.models_dir / self.name / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            run = runs / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                run.mkdir()
                return run
            except FileExistsError:
                continue
        raise RuntimeError(f"{runs}: cannot make a new run folder")

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        max_epochs = int(request.get("max_epochs", 10))
        overrides = dict(request.get("overrides") or {})
        refused = sorted(k for k in overrides if k in _SET_BY_TASK or "network" in k)
        if max_epochs < 1 or refused:
            raise ValueError(
                f"max_epochs must be >= 1 (got {max_epochs}); overrides the task sets or that change the network "
                f"(the served weights must load): {refused}"
            )
        pairs = [(d["image"], d["label"]) for d in datastore.datalist() if d.get("label")]
        if not pairs:
            raise ValueError(f"{self.name}: no image of the datastore has a saved label; save one first")
        with self._one_training():
            return self._train(request, pairs, max_epochs, overrides)

    def _train(
        self, request: dict[str, Any], pairs: list[tuple[str, str]], max_epochs: int, overrides: dict[str, Any]
    ) -> dict[str, Any]:
        run = self._new_run_folder()
        dataset = run / "dataset"
        split = write_training_dataset(
            pairs, dataset, self.kind, float(request.get("val_fraction", 0.2)), int(request.get("seed", 0))
        )
        served = self.served
        args = ["--dataset_dir", str(dataset), "--output_dir", str(run / "train"), "--ckpt_dir", str(run / "candidate")]
        args += ["--init_ckpt", str(served), "--train#trainer#max_epochs", str(max_epochs), "--val_interval", "1"]
        extra = [
            a
            for key, value in overrides.items()
            for a in (f"--{key}", value if isinstance(value, str) else repr(value))
        ]
        args += [*self._reading(), *extra]
        started = time.monotonic()
        logger.info(
            "%s: training on %d images (%s), from %s; run folder %s", self.name, len(pairs), self.kind, served, run
        )
        self._bundle_run(["train.json"], args, run / "train.log")
        candidate = run / "candidate" / "model.pt"
        candidate_score = self._score(candidate, dataset, run / "eval-candidate", extra)
        served_score = self._score(served, dataset, run / "eval-served", extra)
        held_out = split["val"] != [f"{split['train'][0]}{SINGLE_VAL_SUFFIX}"]
        replaced = candidate_score is not None and (served_score is None or candidate_score > served_score)
        if replaced:
            with atomic_path(served_model_path(self.models_dir, self.name)) as tmp:
                shutil.copyfile(candidate, tmp)
        result = {
            "bundle": self.name,
            "annotation": self.kind,
            "images": len(split["train"]) + (len(split["val"]) if held_out else 0),
            "held_out": held_out,  # False: one labelled image, validated on itself (its copy ``<id>-val``)
            "split": split,
            "max_epochs": max_epochs,
            "seconds": round(time.monotonic() - started, 1),
            "key_metric": self.key_metric,
            "candidate": {"path": str(candidate), self.key_metric: candidate_score},
            "served_before": {"path": str(served), self.key_metric: served_score},
            "replaced": replaced,
            "served": str(self.served),
            "run": str(run),
        }
        (run / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        logger.info("%s: %s", self.name, json.dumps(result))
        return result
