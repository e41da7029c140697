"""Ignite handler of the detection bundle's training schedule (Mask R-CNN with Feng et al.'s centerness module).

The batch preparation needs no new code: MONAI's ``PrepareBatchExtraInput(extra_keys="label")`` passes the instance
labels to ``MaskRCNN.forward(images, labels)`` in training and to ``MaskRCNNLoss(output, labels)``.
"""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events

from cellseg_monai.losses.mask_rcnn import MaskRCNNLoss

__all__ = ["CenternessWarmup"]

logger = logging.getLogger(__name__)


class CenternessWarmup:
    """Train the centerness module alone for the first ``epochs`` epochs (Feng et al.'s "-pa-warmup").

    At each ``EPOCH_STARTED`` sets ``loss.centerness_only = engine.state.epoch <= epochs``; the RPN, box and mask
    losses are then left out, so those heads get no gradient while the module (and the shared backbone) learns.

    Args:
        loss: the :class:`MaskRCNNLoss` of the trainer.
        epochs: warm-up epochs, >= 0; 0 disables the warm-up.
    """

    def __init__(self, loss: MaskRCNNLoss, epochs: int = 0) -> None:
        if not isinstance(loss, MaskRCNNLoss):
            raise TypeError(f"CenternessWarmup needs a MaskRCNNLoss, got {type(loss).__name__}")
        if int(epochs) < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.loss = loss
        self.epochs = int(epochs)

    def attach(self, engine: Engine) -> None:
        if self.epochs > 0:
            engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        only = engine.state.epoch <= self.epochs
        if only != self.loss.centerness_only:
            logger.info("epoch %d: %s", engine.state.epoch, "centerness warm-up" if only else "end of warm-up")
        self.loss.centerness_only = only
