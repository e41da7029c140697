"""Tests of cellseg_monai.handlers.pipeline_state: every generator a training draws from, and what its transforms
remember, is found, saved and restored."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, RandFlipd, RandGaussianNoised, RandSpatialCropd

from cellseg_monai.handlers.pipeline_state import PipelineState, find_generators


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
    states = PipelineState(lambda: holder)
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
    states = PipelineState(lambda: [loader])
    for _ in loader:  # epoch 1
        pass
    saved = states.state_dict()
    epoch2 = [b["image"] for b in loader]
    states.load_state_dict(saved)
    again = [b["image"] for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(epoch2, again, strict=True))


class _MadeOnFirstUse:
    """Holds its own generator only from its first call on, and never reseeds it (the hard case)."""

    def __call__(self) -> float:
        if "R" not in vars(self):
            self.R = np.random.RandomState(7)
        return float(self.R.rand())


def test_a_generator_made_on_first_use_is_given_back_to_its_holder():
    used = [_MadeOnFirstUse()]
    used[0](), used[0]()
    saved = PipelineState(lambda: used).state_dict()
    expected = [used[0]() for _ in range(3)]
    fresh = [_MadeOnFirstUse()]  # as built by a resumed run: no generator yet
    PipelineState(lambda: fresh).load_state_dict(saved)
    assert [fresh[0]() for _ in range(3)] == expected


def test_monai_shared_generator_is_restored():
    from monai.transforms import Randomizable

    saved = PipelineState(lambda: []).state_dict()
    expected = Randomizable.R.rand(3).tolist()
    PipelineState(lambda: []).load_state_dict(saved)
    assert Randomizable.R.rand(3).tolist() == expected


def test_a_checkpoint_of_another_pipeline_is_refused():
    saved = PipelineState(lambda: [_Holder().py]).state_dict()
    n = len(find_generators(_pipeline()))
    expected = rf"holds no state of {n} random generator\(s\) or stateful object\(s\) of this training \(0\.transforms"
    with pytest.raises(ValueError, match=expected):
        PipelineState(lambda: [_pipeline()]).load_state_dict(saved)


class _Remembers:
    """A pipeline object that remembers what it saw (like CopyPaste's bank)."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def state_dict(self) -> dict:
        return {"seen": list(self.seen)}

    def load_state_dict(self, state) -> None:
        self.seen = list(state["seen"])


def test_what_pipeline_objects_remember_is_restored_but_not_modules():
    loss = torch.nn.Linear(2, 2)  # a module: saved by the checkpoint itself, not here
    holder = {"memory": _Remembers(), "loss": loss}
    holder["memory"].seen += [1, 2]
    state = PipelineState(lambda: [holder]).state_dict()
    assert state["objects"] == {"0['memory']": {"seen": [1, 2]}}
    fresh = {"memory": _Remembers(), "loss": torch.nn.Linear(2, 2)}
    PipelineState(lambda: [fresh]).load_state_dict(state)
    assert fresh["memory"].seen == [1, 2]
    with pytest.raises(ValueError, match=r"of this training \(0\['memory'\]\)"):
        PipelineState(lambda: [fresh]).load_state_dict(PipelineState(lambda: [{}]).state_dict())
