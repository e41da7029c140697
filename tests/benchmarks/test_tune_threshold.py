"""``benchmarks/tune_threshold.py``: the F1 curve over score thresholds, the choice, and writing the default."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.tune_threshold import best_threshold, f1_by_threshold, set_default  # noqa: E402


def _square(labels: np.ndarray, value: int, y: int, x: int, size: int = 6) -> None:
    labels[y : y + size, x : x + size] = value


@pytest.fixture
def folders(tmp_path):
    """One image: GT holds two nuclei; the prediction finds both (scores 0.9, 0.6) plus two false positives (scores
    0.3, 0.7)."""
    gt = np.zeros((40, 40), np.int32)
    _square(gt, 1, 2, 2)
    _square(gt, 2, 20, 20)
    pred = np.zeros((40, 40), np.int32)
    _square(pred, 1, 2, 2)  # true, score 0.9
    _square(pred, 2, 20, 20)  # true, score 0.6
    _square(pred, 3, 30, 2)  # false, score 0.3
    _square(pred, 4, 2, 30)  # false, score 0.7
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    tifffile.imwrite(tmp_path / "gt" / "a.tif", gt)
    tifffile.imwrite(tmp_path / "pred" / "a.tif", pred)
    (tmp_path / "pred" / "a.csv").write_text("id,area,score\n1,36,0.9\n2,36,0.6\n3,36,0.3\n4,36,0.7\n")
    return tmp_path


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn)


def test_curve_keeps_objects_at_or_above_each_threshold(folders):
    curve = f1_by_threshold(folders / "pred", {"a": folders / "gt" / "a.tif"}, [0.05, 0.3, 0.5, 0.65, 0.8, 0.95])
    expected = {
        0.05: _f1(2, 2, 0),
        0.3: _f1(2, 2, 0),  # >= keeps the 0.3 object
        0.5: _f1(2, 1, 0),
        0.65: _f1(1, 1, 1),
        0.8: _f1(1, 0, 1),
        0.95: 0.0,
    }
    assert curve == pytest.approx(expected)
    assert best_threshold(curve) == 0.5


def test_ties_choose_the_lower_threshold():
    assert best_threshold({0.1: 0.5, 0.3: 0.8, 0.4: 0.8, 0.9: 0.2}) == 0.3


def test_a_missing_prediction_names_the_file(folders):
    from cellseg_monai.data.io import DataError

    with pytest.raises(DataError, match=r"b\.tif: no prediction for train image b"):
        f1_by_threshold(folders / "pred", {"b": folders / "gt" / "a.tif"}, [0.5])


def test_set_default_writes_both_configs_pretty(tmp_path):
    bundle = tmp_path / "partial_maskrcnn"
    shutil.copytree(REPO / "bundles" / "partial_maskrcnn" / "configs", bundle / "configs")
    changed = set_default(bundle, "score_threshold", 0.45)
    assert sorted(p.name for p in changed) == ["inference.json", "train.json"]
    for path in changed:
        text = path.read_text()
        assert json.loads(text)["score_threshold"] == 0.45
        assert text == json.dumps(json.loads(text), indent=4) + "\n"
    with pytest.raises(KeyError, match="no top-level 'no_such_key'"):
        set_default(bundle, "no_such_key", 0.1)


def test_other_weights_are_scored_but_never_installed(tmp_path, capsys):
    from benchmarks.tune_threshold import main

    weights = tmp_path / "model.pt"
    weights.write_bytes(b"not read: the arguments are refused first")
    with pytest.raises(SystemExit):
        main(["lacss", "--weights", str(weights), "--install"])
    assert "does not go with --weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["lacss", "--weights", str(tmp_path / "missing.pt")])
    assert "missing.pt: no such weights file" in capsys.readouterr().err
