"""``benchmarks/tune_decoding.py``: the grid, the choice, and the bundle's own post-processing under each setting."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.tune_decoding import _parser, best_setting, main, parse_grid, score_grid, split_keys  # noqa: E402
from cellseg_monai.data import sample_data_dir  # noqa: E402

SUPERVISED = REPO / "bundles" / "supervised_unet"


def test_parse_grid_sorts_and_deduplicates():
    assert parse_grid(["a=0.7,0.5,0.7", "b=1"]) == {"a": [0.5, 0.7], "b": [1.0]}


def test_parse_grid_keeps_words_in_the_order_given():
    assert parse_grid(["tta=none,flips,none,dihedral", "a=0.5"]) == {"tta": ["none", "flips", "dihedral"], "a": [0.5]}


@pytest.mark.parametrize("items", [[], ["a"], ["a="], ["=0.5"], ["a=0.5,,0.6"], ["a=0.5", "a=0.6"]])
def test_parse_grid_rejects_malformed_items(items):
    with pytest.raises(ValueError):
        parse_grid(items)


def test_best_setting_prefers_the_first_on_a_tie():
    scores = [({"a": 0.5}, 0.8), ({"a": 0.7}, 0.9), ({"a": 0.9}, 0.9)]
    assert best_setting(scores) == {"a": 0.7}


def _touching_pair() -> tuple[np.ndarray, torch.Tensor]:
    """Two 8x8 nuclei side by side; the network is sure of their interiors but gives the two columns where they touch
    P(interior) = 0.6 (P(boundary) = 0.39): a seed threshold of 0.5 merges them, 0.7 keeps them apart."""
    truth = np.zeros((14, 22), np.int64)
    truth[3:11, 2:10], truth[3:11, 10:18] = 1, 2
    prob = np.empty((3, 14, 22))
    prob[:] = np.array([0.98, 0.01, 0.01])[:, None, None]
    prob[:, truth > 0] = np.array([0.01, 0.98, 0.01])[:, None]
    prob[:, 3:11, 9:11] = np.array([0.01, 0.6, 0.39])[:, None, None]
    return truth, torch.as_tensor(np.log(prob), dtype=torch.float32)  # logits whose softmax is prob


def test_score_grid_applies_each_setting_to_the_bundles_own_post_processing():
    from monai.transforms import Compose

    truth, logits = _touching_pair()

    def make(setting):
        return Compose(_parser(SUPERVISED, sample_data_dir(), setting).get_parsed_content("postprocessing_transforms"))

    scores = score_grid([{"pred": logits}], [truth], {"interior_threshold": [0.5, 0.7]}, make)
    # merged at 0.5: one object of 128 px overlaps each 64-px nucleus with IoU 0.5, so one match: F1 = 2/(2+0+1)
    assert scores == [({"interior_threshold": 0.5}, pytest.approx(2 / 3)), ({"interior_threshold": 0.7}, 1.0)]
    assert best_setting(scores) == {"interior_threshold": 0.7}


def test_main_records_every_setting_on_the_sample_data(tmp_path):
    grid = ["--grid", "interior_threshold=0.5,0.9", "foreground_threshold=0.5"]
    assert (
        main(["supervised_unet", "--data", str(sample_data_dir()), "--every", "6", *grid, "--out", str(tmp_path)]) == 0
    )
    record = json.loads((tmp_path / "supervised_unet-decoding.json").read_text())
    assert record["images"] == 1 and record["keys"] == ["interior_threshold", "foreground_threshold"]
    assert [s for s, _ in record["scores"]] == [
        {"interior_threshold": 0.5, "foreground_threshold": 0.5},
        {"interior_threshold": 0.9, "foreground_threshold": 0.5},
    ]
    assert all(0.0 <= f <= 1.0 for _, f in record["scores"])
    assert record["chosen"] == best_setting([(s, f) for s, f in record["scores"]])
    assert "| 0.9 | 0.5 |" in (tmp_path / "supervised_unet-decoding.md").read_text()


def test_main_names_the_config_when_a_key_is_missing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["supervised_unet", "--grid", "no_such_threshold=0.5", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "inference.json" in err and "no_such_threshold" in err


def test_main_keeps_integer_settings_integer(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["impartial", "--grid", "watershed_min_distance=3,3.5", "--out", str(tmp_path)])
    assert "integer" in capsys.readouterr().err


def test_main_refuses_a_word_for_a_number_and_a_number_for_a_word(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["impartial", "--grid", "prob_threshold=low,high", "--out", str(tmp_path)])
    assert "holds a number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["impartial", "--grid", "test_time_augmentation=0,1", "--out", str(tmp_path)])
    assert "holds a string" in capsys.readouterr().err


def test_main_tries_test_time_augmentation_with_a_network_pass_each(tmp_path, monkeypatch):
    import benchmarks.tune_decoding as td

    truth, logits = _touching_pair()
    calls = []

    def fake_predict(bundle_dir, data, items, weights, overrides=None):
        calls.append(dict(overrides))
        # the mirrored passes see the touching columns more surely as boundary: the seeds split at 0.5
        out = logits.clone()
        if overrides["test_time_augmentation"] == "flips":
            out[:, 3:11, 9:11] = torch.log(torch.tensor([0.01, 0.4, 0.59]))[:, None, None]
        return [{"pred": out}], [truth]

    monkeypatch.setattr(td, "predict", fake_predict)
    grid = ["--grid", "test_time_augmentation=none,flips", "interior_threshold=0.5"]
    args = ["supervised_unet", "--data", str(sample_data_dir()), "--every", "6", *grid, "--out", str(tmp_path)]
    assert main(args) == 0
    assert calls == [{"test_time_augmentation": "none"}, {"test_time_augmentation": "flips"}]
    record = json.loads((tmp_path / "supervised_unet-decoding.json").read_text())
    assert record["chosen"] == {"test_time_augmentation": "flips", "interior_threshold": 0.5}
    assert record["previous"]["test_time_augmentation"] == "none"
    assert "| flips | 0.5 | 1.0000 |" in (tmp_path / "supervised_unet-decoding.md").read_text()


def test_split_keys_finds_who_reads_each_threshold():
    def config(bundle):
        return json.loads((REPO / "bundles" / bundle / "configs" / "inference.json").read_text())

    assert split_keys(config("supervised_unet"), ["interior_threshold", "foreground_threshold"]) == (
        [],
        ["interior_threshold", "foreground_threshold"],
    )
    assert split_keys(config("canonical_shape"), ["prob_threshold"]) == (["prob_threshold"], [])  # its predictor's
    with pytest.raises(ValueError, match="reads"):
        split_keys({"postprocessing_transforms": [], "unused": 0.5}, ["unused"])


def test_main_runs_the_network_once_per_network_setting(tmp_path, monkeypatch):
    import benchmarks.tune_decoding as td

    truth, logits = _touching_pair()
    calls = []

    def fake_predict(bundle_dir, data, items, weights, overrides=None):
        calls.append(dict(overrides))
        return [{"pred": logits}], [truth]

    monkeypatch.setattr(td, "split_keys", lambda config, keys: (["min_size"], ["interior_threshold"]))
    monkeypatch.setattr(td, "predict", fake_predict)
    grid = ["--grid", "interior_threshold=0.7,0.5", "min_size=16,200"]
    assert (
        main(["supervised_unet", "--data", str(sample_data_dir()), "--every", "6", *grid, "--out", str(tmp_path)]) == 0
    )
    assert calls == [{"min_size": 16}, {"min_size": 200}]
    record = json.loads((tmp_path / "supervised_unet-decoding.json").read_text())
    # sorted in grid order; min_size 200 removes both 64-px nuclei (and the 128-px merge), so F1 = 0 there
    assert record["scores"] == [
        [{"interior_threshold": 0.5, "min_size": 16}, pytest.approx(2 / 3)],
        [{"interior_threshold": 0.5, "min_size": 200}, 0.0],
        [{"interior_threshold": 0.7, "min_size": 16}, 1.0],
        [{"interior_threshold": 0.7, "min_size": 200}, 0.0],
    ]
    assert record["chosen"] == {"interior_threshold": 0.7, "min_size": 16}
