"""``benchmarks/per_image.py``: per-image scores against hand-made label images, the kinds' losses, the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import benchmarks.per_image as per_image  # noqa: E402
from benchmarks.per_image import image_row, main, summarize  # noqa: E402
from cellseg_monai.data import sample_data_dir  # noqa: E402


def test_image_row_counts_matches_and_foreground():
    truth = np.zeros((20, 20), np.int32)
    truth[2:8, 2:8], truth[12:18, 12:18] = 1, 2  # two 36-px nuclei
    pred = np.zeros_like(truth)
    pred[2:8, 2:8] = 5  # the first found exactly
    pred[10:20, 0:10] = 7  # a false positive that misses the second nucleus
    row = image_row("x", "fluorescence", truth, pred)
    # one match of two true and two predicted objects: precision = recall = F1 = 1/2
    assert row["f1@0.5"] == pytest.approx(0.5) and row["precision@0.5"] == pytest.approx(0.5)
    assert row["recall@0.5"] == pytest.approx(0.5)
    assert (row["objects"], row["predicted"]) == (2, 2)
    assert row["fg_true"] == pytest.approx(72 / 400) and row["fg_predicted"] == pytest.approx(136 / 400)
    assert row["shape"] == [20, 20] and row["kind"] == "fluorescence"
    assert (row["border_objects"], row["border_found"], row["inner_objects"], row["inner_found"]) == (0, 0, 2, 1)


def test_objects_on_the_image_border_are_counted_apart():
    truth = np.zeros((20, 20), np.int32)
    truth[0:4, 5:10] = 1  # cut by the top border, found
    truth[10:14, 16:20] = 2  # cut by the right border, missed
    truth[8:12, 4:8] = 3  # inside, found
    pred = np.zeros_like(truth)
    pred[0:4, 5:9] = 1  # IoU 16 / 20 = 0.8
    pred[8:12, 4:8] = 2
    pred[10:12, 18:20] = 3  # IoU 4 / 16 = 0.25 with object 2: no match
    row = image_row("x", "fluorescence", truth, pred)
    assert (row["border_objects"], row["border_found"], row["inner_objects"], row["inner_found"]) == (2, 1, 1, 1)
    s = summarize([row, {**row, "border_found": 2}])
    assert s["all"]["border_recall"] == pytest.approx(3 / 4) and s["all"]["inner_recall"] == pytest.approx(1.0)


def test_the_kinds_losses_add_up_to_the_gap_of_the_mean():
    rows = [
        {"kind": "fluorescence", "f1@0.5": 0.9},
        {"kind": "fluorescence", "f1@0.5": 0.8},
        {"kind": "brightfield", "f1@0.5": 0.2},
        {"kind": "colour", "f1@0.5": 0.7},
    ]
    s = summarize(rows)
    assert s["all"] == {"images": 4, "f1@0.5": pytest.approx(0.65), "loss": pytest.approx(0.35)}
    assert s["brightfield"] == {"images": 1, "f1@0.5": pytest.approx(0.2), "loss": pytest.approx(0.8 / 4)}
    assert sum(s[k]["loss"] for k in ("fluorescence", "brightfield", "colour")) == pytest.approx(s["all"]["loss"])


def test_main_scores_every_image_of_the_split_on_the_sample_data(tmp_path):
    args = ["supervised_unet", "--data", str(sample_data_dir()), "--out", str(tmp_path), "--name", "sample"]
    assert main([*args, "--set", "test_time_augmentation=none"]) == 0
    record = json.loads((tmp_path / "sample-val.json").read_text())
    assert len(record["images"]) == 3 and record["overrides"] == {"test_time_augmentation": "none"}
    assert record["kinds"]["all"]["f1@0.5"] == pytest.approx(np.mean([r["f1@0.5"] for r in record["images"]]))
    assert all(0.0 <= r["f1@0.5"] <= 1.0 and r["objects"] > 0 for r in record["images"])
    assert "| kind | images | mean F1@0.5 |" in (tmp_path / "sample-val.md").read_text()


def test_scribble_fit_counts_scribbles_inside_and_outside_the_objects():
    from cellseg_monai.annotations.scribbles import BACKGROUND

    scribbles = np.zeros((10, 10), np.uint8)
    scribbles[0, :] = BACKGROUND  # 10 background-scribble pixels ...
    scribbles[5, 2:6] = BACKGROUND + 1  # ... and 4 foreground ones
    labels = np.zeros((10, 10), np.int32)
    labels[0:2, 0:3] = 1  # covers 3 background-scribble pixels
    labels[4:7, 2:4] = 2  # covers 2 of the 4 foreground-scribble pixels
    fit = per_image.scribble_fit(scribbles, labels)
    assert fit == {"bg_scribble_in_object": pytest.approx(0.3), "fg_scribble_missed": pytest.approx(0.5)}
    none = per_image.scribble_fit(np.zeros((4, 4), np.uint8), labels[:4, :4])
    assert np.isnan(none["bg_scribble_in_object"]) and np.isnan(none["fg_scribble_missed"])


def test_scribble_settings_come_from_the_bundle_and_a_bundle_without_scribbles_is_refused():
    config = json.loads((REPO / "bundles" / "impartial" / "configs" / "train.json").read_text())
    assert per_image.scribble_settings(config) == {
        "budget": config["annotation_budget"],
        "fov": config["scribble_fov"],
        "seed": config["seed"],
    }
    other = json.loads((REPO / "bundles" / "supervised_unet" / "configs" / "train.json").read_text())
    with pytest.raises(ValueError, match="not trained on simulated scribbles"):
        per_image.scribble_settings(other)


def test_main_scores_the_fit_of_the_training_scribbles(tmp_path):
    from cellseg_monai.data import load_datalist

    args = ["impartial", "--data", str(sample_data_dir()), "--split", "train", "--every", "3", "--scribbles"]
    assert main([*args, "--out", str(tmp_path), "--name", "fit"]) == 0
    record = json.loads((tmp_path / "fit-train.json").read_text())
    items = load_datalist(sample_data_dir(), "train")[::3]
    assert [r["id"] for r in record["images"]] == [i["id"] for i in items]
    for r in record["images"]:
        assert 0.0 <= r["bg_scribble_in_object"] <= 1.0 and 0.0 <= r["fg_scribble_missed"] <= 1.0
    fits = [r["bg_scribble_in_object"] for r in record["images"]]
    assert record["kinds"]["all"]["bg_scribble_in_object"] == pytest.approx(np.nanmean(fits))
    assert "background scribble inside an object" in (tmp_path / "fit-train.md").read_text()
    with pytest.raises(SystemExit):
        main(["supervised_unet", "--data", str(sample_data_dir()), "--scribbles", "--out", str(tmp_path)])
    kinds = {r["kind"] for r in record["images"]}
    absent = sorted({"fluorescence", "brightfield", "colour"} - kinds)[0]
    with pytest.raises(SystemExit):  # a kind the split does not hold: nothing to score
        main([*args, "--kinds", absent, "--out", str(tmp_path)])
