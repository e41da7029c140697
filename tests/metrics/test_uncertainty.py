"""foreground_entropy against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cellseg_monai.metrics import foreground_entropy


def test_hand_computed_values():
    assert foreground_entropy(np.array([[0.0, 1.0], [1.0, 0.0]])) == 0.0  # certain everywhere
    assert foreground_entropy(np.full((3, 5), 0.5)) == pytest.approx(1.0)  # cannot tell anywhere
    p = 0.25  # H(0.25) = -(0.25 log2 0.25 + 0.75 log2 0.75) = 0.5 + 0.311278... = 0.811278...
    h = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    assert foreground_entropy(torch.tensor([[[0.25, 0.0, 0.5, 1.0]]])) == pytest.approx((h + 0 + 1 + 0) / 4)
    assert h == pytest.approx(0.8112781244591328)


@pytest.mark.parametrize("bad", [np.array([[0.5, 1.2]]), np.array([[np.nan]]), np.zeros((0, 3))])
def test_bad_maps_are_refused(bad):
    with pytest.raises(ValueError, match="foreground_entropy"):
        foreground_entropy(bad)
