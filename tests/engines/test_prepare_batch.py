from __future__ import annotations

import pytest
import torch

from cellseg_monai.engines import PrepareBatchDict


def test_returns_input_and_target_dict():
    batch = {"masked": torch.ones(2, 1, 4, 4), "image": torch.zeros(2, 1, 4, 4), "mask": torch.ones(2, 1, 4, 4) * 2}
    inputs, targets = PrepareBatchDict("masked", ["image", "mask"])(batch, device="cpu")
    assert torch.equal(inputs, batch["masked"])
    assert set(targets) == {"image", "mask"}
    assert torch.equal(targets["mask"], batch["mask"])


def test_missing_key_names_it():
    with pytest.raises(KeyError, match="scribble"):
        PrepareBatchDict("image", ["scribble"])({"image": torch.zeros(1, 1, 2, 2)})
