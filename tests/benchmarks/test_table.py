"""benchmarks/table.py: spec checking, pixel scores and the markdown layout (no training here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from benchmarks.table import format_markdown, load_spec, pixel_scores


def _spec(tmp_path, rows):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"title": "t", "dataset": "d", "metrics": ["f1@0.5", "pixel_iou"], "rows": rows}))
    return path


def test_shipped_specs_are_valid():
    from pathlib import Path

    specs = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "tables").glob("*.json"))
    assert {p.stem for p in specs} >= {"canonical_shape", "lacss", "partial_maskrcnn", "sparse_seunet"}
    for p in specs:
        assert load_spec(p)["rows"]


@pytest.mark.parametrize(
    "row, match",
    [
        ({"label": "a", "bundle": "nope"}, "bundle"),
        ({"label": "a", "bundle": "canonical_shape", "train": {"no_such_id": 1}}, "no_such_id"),
        ({"label": "a", "bundle": "canonical_shape", "eval": {"merge_typo": False}}, "merge_typo"),
    ],
)
def test_spec_errors_name_the_problem(tmp_path, row, match):
    with pytest.raises(ValueError, match=match):
        load_spec(_spec(tmp_path, [row]))


def test_pixel_scores_against_hand_counts(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    g = np.zeros((4, 5), np.uint16)
    g[0, :4] = 1  # 4 GT foreground pixels
    p = np.zeros((4, 5), np.uint16)
    p[0, 2:5] = 7  # 3 predicted, 2 of them right
    tifffile.imwrite(gt / "a.tif", g)
    tifffile.imwrite(pred / "a.tif", p)
    tifffile.imwrite(gt / "b.tif", g)  # no prediction for b: empty, scores 0
    s = pixel_scores(pred, gt)
    assert s["pixel_iou"] == pytest.approx((2 / 5 + 0) / 2)
    assert s["pixel_dice"] == pytest.approx((4 / 7 + 0) / 2)


def test_markdown_has_every_row_and_the_papers_numbers():
    doc = {
        "spec": {"title": "T", "metrics": ["f1@0.5"], "paper": {"P": {"f1@0.5": 0.7}}, "notes": ["n1"]},
        "command": "python benchmarks/table.py x.json",
        "machine_name": "cpu2",
        "machine": {"cpu": "AMD", "torch_threads": 1},
        "dataset": "bbbc038",
        "val_images": 67,
        "rows": [
            {"label": "r1", "scores": {"f1@0.5": 0.5}, "train": {"iterations": 400, "seconds": 120.0}},
            {"label": "r2", "error": "boom"},
        ],
    }
    md = format_markdown(doc)
    assert "| r1 | 0.500 | 400 it, 2.0 min |" in md and "| r2 | error |" in md
    assert "| *paper: P* | 0.700 |" in md and "- n1" in md
