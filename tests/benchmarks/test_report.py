"""benchmarks/report.py and the override / bundle selection of benchmarks/run.py on hand-made inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from benchmarks.infer import parse_override, select_overrides
from benchmarks.report import budget_curves, json_safe, markdown, write_report
from benchmarks.run import discover_bundles

METRICS = ["f1@0.5", "ap_dsb@0.5", "ap_dsb_mean", "aji", "pq", "mdice", "miou"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("network_def#features=8", (None, "network_def#features", 8)),
        ("impartial:network_def#features=8", ("impartial", "network_def#features", 8)),
        ("patch_size=[64, 64]", (None, "patch_size", [64, 64])),
        ("resume=True", (None, "resume", True)),
        ("resume=true", (None, "resume", True)),
        ("name=abc", (None, "name", "abc")),
        ("expr=$@a + 1", (None, "expr", "$@a + 1")),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["features", "=8", ":a=1"])
def test_parse_override_rejects_malformed(text):
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_override(text)


def _parser(config: dict) -> ConfigParser:
    p = ConfigParser()
    p.read_config(config)
    return p


@pytest.mark.parametrize(
    "config, overrides, bundle, chosen, n_notes",
    [
        ({"net": {"features": 64}}, ["net#features=8"], "a", {"net#features": 8}, 0),
        ({"net": {"features": [16, 32]}}, ["net#features=8"], "a", {}, 1),  # kind differs: left alone
        (
            {"net": {"features": [16, 32]}},
            ["net#features=8", "a:net#features=[4, 4]"],
            "a",
            {"net#features": [4, 4]},
            0,
        ),
        ({"net": {"features": 64}}, ["b:net#features=8"], "a", {}, 0),  # another bundle's override
        ({"net": {"features": 64}}, ["missing=1"], "a", {}, 0),  # id not in the config
        ({"lr": 0.001}, ["lr=1"], "a", {"lr": 1}, 0),  # int and float are both numbers
        ({"n": "$len([1, 2])"}, ["n=[1]"], "a", {"n": [1]}, 0),  # expressions accept any value
        # an argument the config leaves to the component's default
        ({"h": [{"_target_": "Saver", "dir": "x"}]}, ["h#0#n_saved=20"], "a", {"h#0#n_saved": 20}, 0),
        ({"h": [{"dir": "x"}]}, ["h#0#n_saved=20"], "a", {}, 0),  # no component there: not an argument
        ({"net": {"features": 64}}, ["net#features#x=1"], "a", {}, 0),  # the parent is a number
    ],
)
def test_select_overrides(config, overrides, bundle, chosen, n_notes):
    got, notes = select_overrides(overrides, _parser(config), bundle)
    assert got == chosen
    assert len(notes) == n_notes


def test_discover_bundles_weak_full_and_symlinks(tmp_path):
    for name, train in [("weak_b", {"annotation_budget": 0.3}), ("full_b", {"seed": 0})]:
        (tmp_path / name / "configs").mkdir(parents=True)
        (tmp_path / name / "configs" / "train.json").write_text(json.dumps(train))
    (tmp_path / "alias").symlink_to(tmp_path / "weak_b")
    (tmp_path / "no_configs").mkdir()
    bundles, missing = discover_bundles(None, tmp_path)
    assert [(b.name, b.weak) for b in bundles] == [("full_b", False), ("weak_b", True)]
    bundles, missing = discover_bundles(["weak_b", "nope"], tmp_path)
    assert [b.name for b in bundles] == ["weak_b"] and missing == ["nope"]


def _result(method, kind, budget, f1):
    scores = dict.fromkeys(METRICS, 0.5) | {"f1@0.5": f1}
    inference = {"s_per_mp": 1.0, "net_s_per_mp": 0.5, "post_s_per_mp": 0.5, "peak_rss_mb": 500.0, "params": 1234,
                 "gflop_per_mp": 10.0, "achieved_gflops": 20.0, "peak_fraction": 0.25, "precision": "float32"}  # fmt: skip
    train = None if kind == "classic" else {"seconds": 60.0, "iterations": 100, "peak_rss_mb": 900.0}
    return {"method": method, "kind": kind, "budget": budget, "train": train, "per_image_mean": scores,
            "pooled": scores, "bundle_metrics": {}, "inference": inference}  # fmt: skip


def _doc():
    results = [
        _result("classic", "classic", None, 0.4),
        _result("weakm", "weak", 0.5, 0.7),
        _result("weakm", "weak", 0.1, math.nan),
        _result("fullm", "full", None, 0.9),
        {"method": "weakm", "kind": "weak", "budget": 1.0, "error": "boom"},
    ]
    return {
        "command": "python benchmarks/run.py --tiny",
        "dataset": "ds",
        "machine_name": "m1",
        "val_images": 2,
        "machine": {
            "cpu": "CPU X",
            "cores": 2,
            "torch_threads": 2,
            "gpu": None,
            "python": "3",
            "torch": "2",
            "monai": "1",
        },
        "matmul": {"n": 64, "gflops": {"cpu": 50.0}, "cpu_1_thread_gflops": 30.0},
        "settings": {
            "budgets": [0.1, 0.5, 1.0],
            "minutes": 10.0,
            "max_epochs": 100000,
            "epoch_length": 25,
            "overrides": [],
        },
        "results": results,
    }


def test_budget_curves_sorted_failed_runs_left_out():
    curves = budget_curves(_doc())
    (b1, v1), (b2, v2) = curves["weak"]["weakm"]
    assert (b1, b2, v2) == (0.1, 0.5, 0.7) and math.isnan(v1)
    assert curves["reference"] == {"classic Otsu + watershed": 0.4, "fullm (full labels)": 0.9}


def test_markdown_and_files(tmp_path):
    doc = _doc()
    text = markdown(doc, "x.png")
    assert text.splitlines()[2:5] == ["```", "python benchmarks/run.py --tiny", "```"]
    assert "CPU X, 2 cores" in text and "![F1@0.5 vs annotation budget](x.png)" in text
    assert "| weakm @ 50 % | 0.700 |" in text and "| weakm @ 10 % | n/a |" in text
    assert "| 1,234 |" in text and "| 25.0 |" in text  # params with separators; 0.25 of the peak as %
    assert "**Failed:** weakm (budget 1.0)" in text
    md, js, png = write_report(doc, tmp_path)
    assert [p.name for p in (md, js, png)] == ["ds-m1.md", "ds-m1.json", "ds-m1-budget.png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(js.read_text())["results"][2]["per_image_mean"]["f1@0.5"] is None  # NaN → null


def test_json_safe():
    assert json_safe({"a": [1.0, math.inf, (2, math.nan)], 3: Path("p")}) == {"a": [1.0, None, [2, None]], "3": "p"}


def test_efficiency_column_only_where_the_precision_was_recorded():
    doc = _doc()
    del doc["results"][0]["inference"]["precision"]  # classic: as in a JSON written before precisions were recorded
    doc["peaks_gflops"] = {"cpu": {"matmul": 100.0, "conv3x3": 80.0, "matmul_bfloat16": 400.0}}
    md = markdown(doc)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    header = next(r for r in rows if "train s" in r)
    col = header.index("% of peak")
    by_method = {r[0]: r for r in rows if len(r) == len(header)}
    assert by_method["fullm (full labels)"][col] == "25.0"
    assert by_method["classic Otsu + watershed"][col] == "–"  # no precision recorded: no fraction
    assert "CPU matmul 100.0, conv3x3 80.0, matmul_bfloat16 400.0 GFLOP/s" in md
