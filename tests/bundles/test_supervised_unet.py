"""The fully supervised U-Net bundle: what only it does (the shared train → evaluate → infer flow is in
test_bundles.py; these tests read the same runs)."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundles.conftest import REPO

BUNDLE = REPO / "bundles" / "supervised_unet"


@pytest.mark.slow
def test_network_predicts_background_interior_boundary(flows):
    state = torch.load(flows["supervised_unet"].trained().model, weights_only=True)
    assert state["final_conv.weight"].shape[0] == 3  # background / interior / boundary


def test_training_uses_full_labels_not_a_budget():
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    assert "annotation_budget" not in parser  # the benchmark tells weak bundles by this id
