"""cellseg_monai.data.balance: image kinds by hand-made images, kind-balanced draws against counted frequencies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellseg_monai.data import DataError, KindBalancedSampler, image_kind, kind_weights
from tests.benchmarks.test_finetune import _nuclei


def test_image_kind_by_hand() -> None:
    assert image_kind(_nuclei(True)) == "fluorescence"
    assert image_kind(np.repeat(_nuclei(True)[..., None], 3, axis=-1)) == "fluorescence"  # grey stored as RGB
    assert image_kind(_nuclei(False)) == "brightfield"
    assert image_kind(np.repeat(_nuclei(False)[..., None], 3, axis=-1)) == "brightfield"
    colour = np.stack([_nuclei(False), _nuclei(False) // 2, _nuclei(False)], axis=-1)
    assert image_kind(colour) == "colour"


def test_kind_weights_by_hand() -> None:
    kinds = ["a"] * 9 + ["b"]
    np.testing.assert_allclose(kind_weights(kinds, 0.0), np.full(10, 0.1))
    # power 1: each kind gets half of the draws
    w = kind_weights(kinds, 1.0)
    assert w[:9].sum() == pytest.approx(0.5) and w[9] == pytest.approx(0.5)
    # power 0.5: a image of kind a weighs 9 ** -0.5 = 1/3, the b image 1 -> shares 3 : 1
    w = kind_weights(kinds, 0.5)
    assert w[:9].sum() == pytest.approx(0.75) and w[9] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="power"):
        kind_weights(kinds, -1)
    with pytest.raises(ValueError, match="empty"):
        kind_weights([], 0.5)


def test_draw_frequencies_match_the_weights() -> None:
    kinds = ["fluorescence"] * 90 + ["colour"] * 9 + ["brightfield"]
    datalist = [{"image": f"{i}.tif"} for i in range(100)]
    sampler = KindBalancedSampler(datalist, power=1.0, kinds=kinds, num_samples=30000, seed=3)
    assert len(sampler) == 30000
    counts = Counter(kinds[i] for i in sampler)
    for kind in ("fluorescence", "colour", "brightfield"):  # a third each, binomial sd ~ 0.003
        assert counts[kind] / 30000 == pytest.approx(1 / 3, abs=0.015)
    assert sampler.shares()["brightfield"] == (1, pytest.approx(1 / 3))


def test_power_zero_is_a_shuffle_and_seeded() -> None:
    datalist = [{"image": f"{i}.tif"} for i in range(7)]
    a = KindBalancedSampler(datalist, power=0.0, seed=5)  # power 0 reads no image
    assert sorted(a) == list(range(7))  # each item once per epoch
    first, second = list(a), list(a)
    assert sorted(second) == list(range(7)) and first != second  # a new order each epoch (fixed by the seed)
    b = KindBalancedSampler(datalist, power=0.0, seed=5)
    c = KindBalancedSampler(datalist, power=0.0, seed=5)
    assert [list(b) for _ in range(3)] == [list(c) for _ in range(3)]
    assert [list(b) for _ in range(3)] != [list(KindBalancedSampler(datalist, power=0.0, seed=6)) for _ in range(3)]


def test_generator_state_continues_a_run() -> None:
    datalist = [{"image": f"{i}.tif"} for i in range(20)]
    kinds = ["x"] * 15 + ["y"] * 5
    run = KindBalancedSampler(datalist, kinds=kinds, seed=1)
    list(run)
    state = run.generator.get_state()
    expected = list(run)
    resumed = KindBalancedSampler(datalist, kinds=kinds, seed=1)
    resumed.generator.set_state(state)
    assert list(resumed) == expected


def test_ranks_split_one_sequence() -> None:
    datalist = [{"image": f"{i}.tif"} for i in range(11)]
    kinds = ["x"] * 8 + ["y"] * 3
    whole = list(KindBalancedSampler(datalist, kinds=kinds, seed=2, num_samples=12))
    parts = [
        list(KindBalancedSampler(datalist, kinds=kinds, seed=2, num_samples=11, num_replicas=3, rank=r))
        for r in range(3)
    ]
    assert [len(p) for p in parts] == [4, 4, 4]  # 11 rounded up to 12
    assert [i for group in zip(*parts, strict=True) for i in group] == whole
    with pytest.raises(ValueError, match="rank 3"):
        KindBalancedSampler(datalist, kinds=kinds, num_replicas=3, rank=3)


def test_reads_kinds_from_files(tmp_path: Path) -> None:
    datalist = []
    for i, bright in enumerate([True, True, True, False]):
        tifffile.imwrite(tmp_path / f"{i}.tif", _nuclei(bright))
        datalist.append({"image": str(tmp_path / f"{i}.tif")})
    sampler = KindBalancedSampler(datalist, power=1.0, num_samples=4000, seed=0)
    assert sampler.kinds == ["fluorescence"] * 3 + ["brightfield"]
    assert Counter(sampler)[3] / 4000 == pytest.approx(0.5, abs=0.04)


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        KindBalancedSampler([])
    with pytest.raises(ValueError, match="2 kinds for 3 items"):
        KindBalancedSampler([{"image": "a"}] * 3, kinds=["x", "y"])
    with pytest.raises(ValueError, match="num_samples"):
        KindBalancedSampler([{"image": "a"}], kinds=["x"], num_samples=0)
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(DataError, match="broken.tif"):
        KindBalancedSampler([{"image": str(bad)}])


def test_in_a_dataloader() -> None:
    data = [{"image": f"{i}.tif", "v": i} for i in range(6)]
    sampler = KindBalancedSampler(data, kinds=["x"] * 5 + ["y"], power=1.0, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=2, sampler=sampler)
    seen = [int(v) for batch in loader for v in batch["v"]]
    assert len(seen) == 6 and set(seen) <= set(range(6))
