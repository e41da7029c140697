"""CenternessWarmup: the Mask R-CNN loss trains the centerness module alone for the first epochs, then everything."""

from __future__ import annotations

import pytest
from ignite.engine import Engine, Events

from cellseg_monai.handlers import CenternessWarmup
from cellseg_monai.losses.mask_rcnn import MaskRCNNLoss


@pytest.mark.parametrize("epochs, expected", [(2, [True, True, False, False]), (0, [False] * 4)])
def test_warmup_handler_switches_per_epoch(epochs, expected):
    loss = MaskRCNNLoss()
    seen = []
    engine = Engine(lambda e, b: None)
    CenternessWarmup(loss, epochs).attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(loss.centerness_only))
    engine.run([0], max_epochs=4)
    assert seen == expected


def test_refuses_other_losses_and_negative_epochs():
    with pytest.raises(TypeError, match="MaskRCNNLoss"):
        CenternessWarmup(object(), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        CenternessWarmup(MaskRCNNLoss(), -1)
