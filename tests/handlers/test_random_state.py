"""Tests of cellseg_monai.handlers.random_state: every generator a training draws from is found, saved and restored."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, RandFlipd, RandGaussianNoised, RandSpatialCropd

from cellseg_monai.handlers.random_state import RandomStates, find_generators


def _draws(objects) -> list:
    """One draw from each global generator and from each generator held by ``objects``."""
    out = [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()]
    for gen in find_generators(*objects):
        if isinstance(gen, np.random.RandomState):
            out.append(gen.rand(2).tolist())
        elif isinstance(gen, np.random.Generator):
            out.append(gen.random(2).tolist())
        elif isinstance(gen, torch.Generator):
            out.append(torch.rand(2, generator=gen).tolist())
        else:
            out.append(gen.random())
    return out


def _pipeline() -> Compose:
    return Compose(
        [
            RandSpatialCropd(keys="image", roi_size=(4, 4), random_size=False),
            RandFlipd(keys="image", prob=0.5),
            RandGaussianNoised(keys="image", prob=0.5),
        ]
    )


class _Holder:
    def __init__(self) -> None:
        self.gens = {"np": np.random.default_rng(3), "torch": torch.Generator().manual_seed(4)}
        self.py = [random.Random(5)]
        self.me = self  # a cycle


def test_find_generators_reaches_nested_transforms_once_in_a_stable_order():
    pipeline = _pipeline()
    found = find_generators(pipeline, [pipeline], {"again": pipeline})
    # Compose.R and each transform's R (a dictionary transform and the array transform it wraps may each hold one)
    for t in [pipeline, *pipeline.transforms]:
        assert any(g is t.R for g in found)
    assert len({id(g) for g in found}) == len(found)
    assert [type(g) for g in find_generators(_pipeline())] == [type(g) for g in found]
    kinds = [type(g) for g in find_generators(_Holder())]
    assert kinds == [np.random.Generator, torch.Generator, random.Random]


def test_a_restored_state_repeats_every_draw():
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    holder = (_pipeline(), _Holder())
    states = RandomStates(lambda: holder)
    buffer = io.BytesIO()
    torch.save(states.state_dict(), buffer)  # as a checkpoint does
    first = _draws(holder)
    buffer.seek(0)
    states.load_state_dict(torch.load(buffer, weights_only=True))  # as MONAI's CheckpointLoader reads it
    assert _draws(holder) == first
    assert _draws(holder) != first  # the generators did move on


def test_a_data_loader_epoch_repeats_after_restoring():
    """Shuffling (global torch) and the transforms' own RandomStates (seeded once, when the loader is built)."""
    data = [{"image": torch.arange(64, dtype=torch.float32).reshape(1, 8, 8) + 100 * i} for i in range(4)]
    loader = DataLoader(CacheDataset(data, _pipeline(), progress=False), batch_size=2, shuffle=True)
    states = RandomStates(lambda: [loader])
    for _ in loader:  # epoch 1
        pass
    saved = states.state_dict()
    epoch2 = [b["image"] for b in loader]
    states.load_state_dict(saved)
    again = [b["image"] for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(epoch2, again, strict=True))


def test_a_checkpoint_of_another_pipeline_is_refused():
    saved = RandomStates(lambda: [_pipeline()]).state_dict()
    n = len(find_generators(_pipeline()))
    with pytest.raises(ValueError, match=rf"holds {n} random generator states .* this training has 1 \(Random\)"):
        RandomStates(lambda: [_Holder().py]).load_state_dict(saved)
