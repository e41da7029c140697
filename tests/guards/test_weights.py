"""Weights files are checked before use: every bad one is one ``DataError`` line naming the file (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cellseg_monai.data.io import DataError
from cellseg_monai.guards.weights import check_weights

NET = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 1, 1))
KEYS = list(NET.state_dict())


def _save(obj: object):
    return lambda path: torch.save(obj, path)


# (name, how the file is made, the problem after "<file>: ")
BAD = [
    ("empty", lambda p: p.write_bytes(b""), "weights file is empty (0 bytes)"),
    *[
        (
            f"random_bytes_{seed}",
            lambda p, seed=seed: p.write_bytes(np.random.default_rng(seed).bytes(300)),
            "not a PyTorch",
        )
        for seed in range(3)
    ],
    ("zip_header_then_garbage", lambda p: p.write_bytes(b"PK\x03\x04" + bytes(200)), "not a PyTorch weights file"),
    ("text", lambda p: p.write_text("hello\n"), "not a PyTorch weights file, or a damaged one"),
    ("truncated", lambda p: p.write_bytes(_bytes_of(NET.state_dict())[:100]), "not a PyTorch weights file"),
    ("a_list", _save([1, 2, 3]), "holds a list, not a state dict"),
    ("a_tensor", _save(torch.zeros(3)), "holds a Tensor, not a state dict"),
    ("another_network", _save(torch.nn.Linear(2, 2).state_dict()), "weights of another network (keys: 4 missing"),
    ("one_key_short", _save({k: v for k, v in NET.state_dict().items() if k != "1.bias"}), "1 missing (e.g. 1.bias)"),
]


def _bytes_of(obj: object) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("name, make, problem", BAD, ids=[b[0] for b in BAD])
def test_bad_weights_file_is_one_line_naming_it(tmp_path, name, make, problem):
    path = tmp_path / f"{name}.pt"
    make(path)
    before = path.read_bytes()
    with pytest.raises(DataError) as info:
        check_weights(path, KEYS)
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before


def test_missing_file_and_folder(tmp_path: Path):
    with pytest.raises(DataError, match="weights file does not exist"):
        check_weights(tmp_path / "no.pt")
    with pytest.raises(DataError, match="is a folder"):
        check_weights(tmp_path)


def test_plain_state_dict_and_training_checkpoint_are_accepted(tmp_path):
    state = NET.state_dict()
    torch.save(state, tmp_path / "model.pt")
    torch.save({"model": state, "optimizer": {"state": {}}}, tmp_path / "checkpoint_epoch=1.pt")
    for name in ("model.pt", "checkpoint_epoch=1.pt"):
        loaded = check_weights(tmp_path / name, KEYS)
        assert list(loaded) == KEYS and all(torch.equal(loaded[k], state[k]) for k in KEYS)
