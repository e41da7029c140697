"""``benchmarks/economy.py``: nuclei counted per budget, annotation cost and the goal check."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.economy import SECONDS, annotated_objects, economy_rows, markdown  # noqa: E402


def test_annotated_objects_rounds_up_per_image_with_at_least_one():
    counts = [0, 3, 10, 250]
    # 1 %: 0, 1, 1, ceil(2.5) = 3; 25 %: 0, 1, 3, 63; 100 %: every nucleus
    assert annotated_objects(counts, 0.01) == 0 + 1 + 1 + 3
    assert annotated_objects(counts, 0.25) == 0 + 1 + 3 + 63
    assert annotated_objects(counts, 1.0) == 263


def _doc(f1_full: float = 0.8) -> dict:
    weak = [
        {"method": "impartial", "kind": "weak", "budget": b, "per_image_mean": {"f1@0.5": f}}
        for b, f in ((0.01, 0.5), (0.1, 0.78), (1.0, 0.81))
    ]
    full = {"method": "supervised_unet", "kind": "full", "budget": None, "per_image_mean": {"f1@0.5": f1_full}}
    return {"results": [*weak, full, {"method": "lacss", "kind": "weak", "budget": 0.5, "error": "failed"}]}


def test_economy_rows_price_budgets_against_full_outlines():
    counts = [10, 30]  # 40 nuclei
    seconds = {"outline": 50.0, "point": 2.0, "scribble": 4.0}
    e = economy_rows(_doc(), counts, seconds)
    assert e["reference"] == "supervised_unet (full labels)" and e["objects"] == 40
    assert e["full_hours"] == pytest.approx(40 * 50 / 3600)
    by_budget = {r["budget"]: r for r in e["rows"]}
    assert set(by_budget) == {0.01, 0.1, 1.0}  # the failed run is left out
    r = by_budget[0.1]  # 1 + 3 nuclei scribbled at 4 s each vs 40 outlined at 50 s
    assert r["objects"] == 4 and r["kind"] == "scribble"
    assert r["cost_fraction"] == pytest.approx(16 / 2000)
    assert r["f1_fraction"] == pytest.approx(0.78 / 0.8)
    assert r["meets_goal"]  # 97.5 % of the F1 at 0.8 % of the cost
    assert not by_budget[0.01]["meets_goal"]  # 62.5 % of the F1
    assert not by_budget[1.0]["meets_goal"]  # 40 scribbles: 160 s = 8 % of the cost
    assert by_budget[1.0]["cost_fraction"] == pytest.approx(0.08)


def test_economy_rows_need_one_reference():
    doc = _doc()
    doc["results"] = [r for r in doc["results"] if r["kind"] != "full"]
    with pytest.raises(ValueError, match="reference"):
        economy_rows(doc, [5], SECONDS)


def test_markdown_lists_every_row_and_the_reference():
    e = economy_rows(_doc(), [10, 30], SECONDS)
    record = {
        "dataset": "bbbc038",
        "machine_name": "cpu2",
        "command": "c",
        "run_command": "r",
        "run_results": "x.json",
        "machine": "m",
        "minutes": 8.0,
        "train_images": 2,
        "val_images": 1,
        "seconds": SECONDS,
        "economy": e,
    }
    text = markdown(record, "p.png")
    assert text.count("| impartial |") == 3 and "| supervised_unet (full labels) | 100 % |" in text
    assert "| 10 % | 4 (10.0 %) | scribble |" in text
    assert not math.isnan(e["rows"][0]["f1_fraction"])
