"""Fine-tuning: start a new training from given network weights (a bundle's shipped ``models/model.pt`` or a training
checkpoint) instead of a random initialisation."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from cellseg_monai.data.io import DataError
from cellseg_monai.handlers.checkpoint import latest_checkpoint

__all__ = ["SHIPPED", "InitWeights", "InitWeightsError", "load_network_weights", "resolve_init_ckpt"]

logger = logging.getLogger(__name__)

SHIPPED = "shipped"
"""``init_ckpt`` value that names the bundle's own shipped weights, ``<bundle_root>/models/model.pt``."""

_ACCEPTED = "a bundle's models/model.pt, a training checkpoint_epoch=N.pt, 'shipped', or '' to train from scratch"


class InitWeightsError(DataError):
    """The ``init_ckpt`` file is missing, unreadable, not a network checkpoint, or made for another network; the
    message names the file."""


def resolve_init_ckpt(path: str | os.PathLike | None, bundle_root: str | os.PathLike | None = None) -> str:
    """The file that ``init_ckpt`` names: ``""`` for none (``None``/empty), the bundle's ``models/model.pt`` for
    ``"shipped"``, else ``path`` itself (``~`` expanded)."""
    text = "" if path is None else str(path).strip()
    if not text:
        return ""
    if text == SHIPPED:
        if bundle_root is None:
            raise InitWeightsError("init_ckpt 'shipped' needs the bundle's root folder (bundle_root) to find it")
        return str(Path(bundle_root) / "models" / "model.pt")
    return os.path.expanduser(text)


def load_network_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network ``state_dict`` in ``path``, on the CPU.

    Accepts a plain state dict (a bundle's ``models/model.pt``) or a training checkpoint (``{"model": state_dict,
    "optimizer": ..., "trainer": ...}``, what :class:`~cellseg_monai.handlers.TrainingCheckpoint` writes); a
    ``module.`` prefix left by ``DistributedDataParallel`` is removed. Loaded with ``weights_only=True``.

    Raises:
        InitWeightsError: the file is missing, is not a PyTorch file, or holds no tensor dictionary.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise InitWeightsError(f"{path}: init_ckpt not found (expected {_ACCEPTED})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike: the file is not a checkpoint we can read
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise InitWeightsError(f"{path}: init_ckpt is not a readable PyTorch checkpoint ({reason})") from e
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InitWeightsError(
            f"{path}: init_ckpt holds no network weights (neither a state_dict nor a checkpoint with a 'model' entry)"
        )
    if all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module.") :]: v for k, v in state.items()}
    return {str(k): v for k, v in state.items()}


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The model inside ``DistributedDataParallel`` / ``DataParallel``."""
    return (
        network.module
        if isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel))
        else network
    )


def _fit(
    network: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str, strict: bool
) -> dict[str, torch.Tensor]:
    """The entries of ``state`` to load into ``network``; every entry when ``strict``, else the keys whose shapes fit.

    Raises:
        InitWeightsError: (``strict``) a key is missing, unexpected or mis-shaped; (not ``strict``) nothing fits.
    """
    own = _unwrap(network).state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    fitting = {k: v for k, v in state.items() if k in own and k not in misshaped}
    problems = []
    if missing:
        problems.append(f"{len(missing)} weight(s) missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if misshaped:
        k = misshaped[0]
        problems.append(
            f"{len(misshaped)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
            f"{tuple(own[k].shape)} in the network)"
        )
    if problems and (strict or not fitting):
        raise InitWeightsError(
            f"{path}: init_ckpt does not fit this network ({'; '.join(problems)}): was it made by this bundle with "
            "the same network_def?"
        )
    if problems:
        logger.warning("init_ckpt %s: loading %d of %d weights; %s", path, len(fitting), len(own), "; ".join(problems))
    return fitting


class InitWeights:
    """Load network weights before a new training starts (fine-tuning), unless the run resumes.

    The file is read and checked against the network when the handler is built, so a wrong ``init_ckpt`` ends the
    run with one line naming the file before any training; the weights are copied into the network when the
    trainer starts (``Events.STARTED``). A run that resumes (``resume`` and a ``checkpoint_*.pt`` in ``save_dir``,
    the same test as :class:`~cellseg_monai.handlers.TrainingCheckpoint`) continues from its own checkpoint and
    ignores ``init_ckpt``: resume wins. Only the network is initialised; optimizer, schedule and epoch count start
    afresh.

    Args:
        path: ``""`` (default in the configs): nothing, train from scratch; ``"shipped"``: the bundle's own
            ``models/model.pt``; otherwise a file: a plain state dict or a training checkpoint (its ``"model"``).
        network: the network to initialise (``DistributedDataParallel`` is unwrapped).
        bundle_root: the bundle folder, to find ``"shipped"``.
        resume, save_dir: the run's ``resume`` flag and checkpoint folder (``output_dir``).
        strict: every weight must be present with the same shape (default); ``False`` loads the weights whose name
            and shape fit and warns about the rest (e.g. a head with another number of classes).

    Raises:
        InitWeightsError: missing, unreadable or foreign file (see :func:`load_network_weights`); with ``strict``,
            a file whose weights do not match the network's names and shapes.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        network: torch.nn.Module,
        bundle_root: str | os.PathLike | None = None,
        resume: bool = False,
        save_dir: str | os.PathLike | None = None,
        strict: bool = True,
    ) -> None:
        self.path = resolve_init_ckpt(path, bundle_root)
        self.network = network
        self.resumes = bool(resume) and save_dir is not None and bool(latest_checkpoint(save_dir))
        self.state: dict[str, torch.Tensor] | None = None
        if self.path and self.resumes:
            logger.info("resuming the run in %s: init_ckpt %s is not loaded", save_dir, self.path)
        elif self.path:
            self.state = _fit(network, load_network_weights(self.path), self.path, strict)

    def attach(self, engine: Engine) -> None:
        if self.state is not None:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Copy the weights into the network (once)."""
        if self.state is None:
            return
        _unwrap(self.network).load_state_dict(self.state, strict=False)
        logger.info("initialised %d network weights from %s", len(self.state), self.path)
        self.state = None
