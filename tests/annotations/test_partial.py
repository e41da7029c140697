from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cellseg_monai.annotations.partial import keep_fraction, kept_ids
from cellseg_monai.transforms.partial import KeepFraction, KeepFractiond


def _labels(n: int, shape=(40, 40)) -> np.ndarray:
    lab = np.zeros(shape, np.uint16)
    for k in range(1, n + 1):
        r, c = divmod(k - 1, 8)
        lab[r * 5 : r * 5 + 3, c * 5 : c * 5 + 3] = k
    return lab


@pytest.mark.parametrize(
    "n, fraction, expected",
    [(8, 0.25, 2), (10, 0.25, 3), (1, 0.25, 1), (3, 0.1, 1), (7, 1.0, 7), (0, 0.25, 0), (20, 0.5, 10)],
)
def test_count_is_ceil_at_least_one(n, fraction, expected):
    kept = kept_ids(_labels(n), "img", seed=0, fraction=fraction)
    assert kept.size == expected == (0 if n == 0 else max(1, math.ceil(fraction * n - 1e-9)))


def test_kept_instances_are_unchanged_and_others_removed():
    lab = _labels(12)
    out = keep_fraction(lab, "a", seed=3, fraction=0.25)
    assert out.dtype == lab.dtype and out.shape == lab.shape
    kept = np.setdiff1d(np.unique(out), [0])
    assert kept.size == 3
    for k in range(1, 13):
        if k in kept:
            np.testing.assert_array_equal(out == k, lab == k)
        else:
            assert not (out == k).any()


def test_deterministic_per_id_seed_fraction_and_varies():
    lab = _labels(24)
    a = kept_ids(lab, "x", 0, 0.25)
    np.testing.assert_array_equal(a, kept_ids(lab, "x", 0, 0.25))
    others = [kept_ids(lab, i, s, 0.25) for i, s in [("y", 0), ("x", 1), ("z", 5)]]
    assert any(not np.array_equal(a, o) for o in others)


@pytest.mark.parametrize("fraction, err", [(0.0, ValueError), (1.5, ValueError), (True, TypeError), ("a", TypeError)])
def test_bad_fraction(fraction, err):
    with pytest.raises(err):
        kept_ids(_labels(3), "x", 0, fraction)


def test_transform_uses_meta_id_and_dict_wrapper():
    lab = _labels(8)[None]
    mt = MetaTensor(torch.as_tensor(lab.astype(np.int32)), meta={"id": "img7"})
    out = KeepFraction(0.25, seed=1)(mt)
    assert isinstance(out, MetaTensor) and out.meta["id"] == "img7"
    np.testing.assert_array_equal(out.numpy()[0], keep_fraction(lab[0], "img7", 1, 0.25))
    d = KeepFractiond("label", fraction=0.25, seed=1)({"label": torch.as_tensor(lab.astype(np.int32)), "id": "img7"})
    np.testing.assert_array_equal(d["label"].numpy(), out.numpy())
    with pytest.raises(ValueError, match="sample id"):
        KeepFraction(0.25)(torch.as_tensor(lab.astype(np.int32)))
    full = KeepFraction(1.0)(torch.as_tensor(lab.astype(np.int32)))  # 1.0 needs no id
    np.testing.assert_array_equal(full.numpy(), lab)
