"""MONAI Label app serving this repository's bundles (``bundles/<name>``) for 2D cell/nucleus instance segmentation.

Start it with the repository's script (venv built by ``bash monailabel/install.sh``)::

    bash monailabel/start.sh <folder of PNG/TIFF images> [--port 8000] [--host 127.0.0.1] [--conf models impartial,lacss]

One infer task per bundle that ships ``models/model.pt`` (``POST /infer/<bundle>``): the bundle's own
``configs/inference.json`` with its shipped weights; the result is the bundle's instance labels, ``uint16`` ids
(0 background), pixel-identical to ``python -m monai.bundle run --config_file bundles/<bundle>/configs/inference.json``
on the same image. Nothing is downloaded at start and nothing is written into the bundle folders.

``--conf`` options (all optional):

- ``models``: comma-separated bundle names to serve, or ``all`` (default: every bundle with weights).
- ``bundles``: the folder holding the bundles (default: ``bundles/`` of this repository).
- ``label_name``: the name viewers show for the objects (default ``nucleus``).
- ``preload``: ``true`` loads every network when the server starts (default ``false``: on the first request).
- ``model_dir``: where trainings run and their better models are served from (default ``<images>/.cellseg/models``,
  next to the datastore's labels; ``<app>/model`` for a remote datastore).

One train task per bundle (``POST /train/<bundle>``, :mod:`lib.trainers`): fine-tunes the served weights on the
datastore's saved labels — scribbles for ImPartial, instance outlines for the others — and serves the result
(``<model_dir>/<bundle>/model.pt``) only if it beats the served model on held-out images; infer tasks serve that
file when it exists, else the bundle's shipped ``models/model.pt`` (reloaded when the file changes).

Active learning (``POST /activelearning/<strategy>``, :mod:`lib.strategies`): ``uncertainty`` proposes the
unlabelled image a served model is least sure about; ``random`` and ``first`` are MONAI Label's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lib.infers import CellSegBundleInferTask
from lib.strategies import Uncertainty
from lib.trainers import CellSegBundleTrainTask, served_model_path
from monailabel.config import Settings, settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

import cellseg_monai

logger = logging.getLogger(__name__)

#: image files the datastore lists unless MONAI_LABEL_DATASTORE_FILE_EXT is set (MONAI Label's default lacks .tiff
#: and lists 3D formats)
IMAGE_PATTERNS = ["*.png", "*.tif", "*.tiff", "*.jpg", "*.jpeg", "*.PNG", "*.TIF", "*.TIFF", "*.JPG", "*.JPEG"]


def bundle_dirs(root: Path) -> dict[str, Path]:
    """Bundles under ``root``: folders with ``configs/inference.json``; links (the ``imppartial`` alias) skipped."""
    if not root.is_dir():
        raise FileNotFoundError(f"no bundles folder at {root} (pass --conf bundles <folder>)")
    return {
        p.name: p
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.is_symlink() and (p / "configs" / "inference.json").is_file()
    }


class CellSegApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        repo = Path(app_dir).resolve().parents[1]
        self.bundles_root = Path(conf.get("bundles", repo / "bundles")).resolve()
        available = bundle_dirs(self.bundles_root)
        wanted = [m.strip() for m in conf.get("models", "all").split(",") if m.strip()]
        if wanted and wanted != ["all"]:
            unknown = sorted(set(wanted) - set(available))
            if unknown:
                raise ValueError(
                    f"unknown bundle(s) {unknown} in --conf models; {self.bundles_root} has {sorted(available)}"
                )
            available = {n: available[n] for n in wanted}
        self.bundles = available
        self.label_name = conf.get("label_name", "nucleus")
        remote = studies.startswith(("http://", "https://"))
        default_models = Path(app_dir) / "model" if remote else Path(studies) / ".cellseg" / "models"
        self.models_dir = Path(conf.get("model_dir", default_models)).resolve()

        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="cellseg-monai",
            description="Cell and nucleus instance segmentation: the bundles of cellseg-monai with their shipped weights",
            version=cellseg_monai.__version__,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        extensions = settings.MONAI_LABEL_DATASTORE_FILE_EXT
        if extensions == Settings.model_fields["MONAI_LABEL_DATASTORE_FILE_EXT"].default:
            extensions = IMAGE_PATTERNS  # not set by the user
        logger.info(f"Init Datastore for: {self.studies}; images {extensions}")
        return LocalDatastore(
            self.studies,
            extensions=extensions,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.bundles.items():
            if not (path / "models" / "model.pt").is_file():
                logger.warning(f"--- Bundle {name}: no models/model.pt yet, not served")
                continue
            served = str(served_model_path(self.models_dir, name))
            task = CellSegBundleInferTask(str(path), self.conf, label_name=self.label_name, served=served)
            if not task.is_valid():
                logger.warning(f"--- Bundle {name}: MONAI Label cannot load it, not served")
                continue
            logger.info(f"+++ Adding Inferer:: {name} => {path}")
            infers[name] = task
        if not infers:
            logger.warning(f"No bundle under {self.bundles_root} ships models/model.pt: nothing to serve")
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        return {
            name: CellSegBundleTrainTask(path, self.models_dir)
            for name, path in self.bundles.items()
            if (path / "models" / "model.pt").is_file()  # fine-tuning starts from the shipped weights
        }

    def init_strategies(self) -> dict[str, Strategy]:
        strategies: dict[str, Strategy] = {"random": Random(), "first": First()}
        # bundles with a foreground probability (canonical_shape's fg_prob is its 0/1 instance mask)
        with_fg = [n for n in ("impartial", "supervised_unet") if n in self._infers]
        if with_fg:
            strategies["uncertainty"] = Uncertainty(self._infers, default_model=with_fg[0])
        return strategies
