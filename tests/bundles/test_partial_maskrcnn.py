"""The partially-labelled-exemplar Mask R-CNN bundle: what only it does — centerness warm-up, the ablation switches
(the shared train → evaluate → infer flow is in test_bundles.py; these tests read the same runs)."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundles.conftest import REPO

BUNDLE = REPO / "bundles" / "partial_maskrcnn"


@pytest.mark.slow
def test_checkpoint_holds_the_additions_and_training_warms_up(flows):
    flow = flows["partial_maskrcnn"].trained()
    state = torch.load(flow.model, weights_only=True)
    assert state["box_cls.weight"].shape[0] == 2  # background / nucleus
    assert "centerness.anchor_size" in state and "attention.0.query.weight" in state
    assert "centerness warm-up" in flow.log and "end of warm-up" in flow.log  # --warmup_epochs 1 of the shared run


def test_config_ids_for_the_ablations():
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    assert parser["annotation_budget"] == 0.25  # benchmarks/run.py tells weak bundles by this id
    assert parser["use_attention"] is True and parser["use_centerness"] is True and parser["warmup_epochs"] == 0
    net = parser.get_parsed_content("network_def", instantiate=True)
    assert net.centerness is not None and len(net.attention) == 3
    parser["use_centerness"] = False
    parser["use_attention"] = False
    parser.parse(True)
    net = parser.get_parsed_content("network_def", instantiate=True)
    assert getattr(net, "centerness", None) is None and len(net.attention) == 0  # the plain Mask R-CNN
