"""The LACSS bundle: what only it does — weak (points + mask) by default, full supervision by an override file
(the shared train → evaluate → infer flow is in test_bundles.py; these tests read the same runs)."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundles.conftest import REPO, SPECS, bundle_run

BUNDLE = REPO / "bundles" / "lacss"


@pytest.mark.slow
def test_checkpoint_holds_the_location_proposal_and_segmentation_networks(flows):
    state = torch.load(flows["lacss"].trained().model, weights_only=True)
    assert any(k.startswith("lpn.") for k in state) and any(k.startswith("segmentor.") for k in state)


def test_weak_by_default_full_by_override():
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    assert parser["supervised"] is False and parser["points_source"] == "simulate"
    assert parser["annotation_budget"] == 1.0  # every cell gets a point by default
    assert parser.get_parsed_content("partial_points") is False
    assert parser.get_parsed_content("loss").partial_points is False
    parser.read_config([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "full.json")])
    assert parser["supervised"] is True


def test_an_annotation_budget_clicks_a_fraction_and_switches_the_loss_to_partial_points():
    # benchmarks/run.py tells weak bundles by `annotation_budget`; below 1 the simulated clicks cover that share of
    # each image's cells and the loss leaves the unclicked foreground out
    from cellseg_monai.transforms.points import MakePointsd

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["annotation_budget"] = 0.1
    assert parser.get_parsed_content("loss").partial_points is True
    makers = [t for t in parser.get_parsed_content("train#preprocessing").transforms if isinstance(t, MakePointsd)]
    assert len(makers) == 1 and makers[0].inner.simulator.fraction == pytest.approx(0.1)
    val = [t for t in parser.get_parsed_content("validate#preprocessing").transforms if isinstance(t, MakePointsd)]
    assert len(val) == 1 and val[0].inner.simulator.fraction == 1.0  # held-out images keep every point
    # positive crops are centred on clicks (on the mask, most crops of a 1 % budget would hold no click at all)
    assert parser.get_parsed_content("crop_label_key") == "points"
    parser["annotation_budget"] = 1.0
    assert parser.get_parsed_content("crop_label_key") == "fg_mask"


@pytest.mark.slow
def test_full_supervision_with_detected_points_trains(disc_dataset, tmp_path):
    bundle_run(
        BUNDLE,
        ["train.json", "full.json"],
        *["--dataset_dir", str(disc_dataset), "--output_dir", str(tmp_path / "train")],
        *["--ckpt_dir", str(tmp_path / "models"), "--points_source", "detect", "--train#trainer#max_epochs", "1"],
        *["--val_interval", "1", "--num_samples", "2", "--patch_size", "[64, 64]"],
        *SPECS["lacss"].small,
    )
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_trains_and_validates_on_points_alone(disc_dataset, tmp_path):
    """One dot per cell and no outline (weak/points/<id>.csv, the mask from a threshold): the key metric is the
    point F1 on the held-out images' dots, label metrics are NaN."""
    import shutil

    import numpy as np
    import tifffile
    from scipy import ndimage

    from cellseg_monai.annotations import write_points_csv

    data = tmp_path / "dotted"
    shutil.copytree(disc_dataset / "images", data / "images")
    shutil.copy(disc_dataset / "split.json", data / "split.json")
    for path in sorted((disc_dataset / "labels").glob("*.tif")):
        labels = tifffile.imread(path)
        ids = [k for k in np.unique(labels) if k]
        centres = np.asarray(ndimage.center_of_mass(labels > 0, labels, ids))
        write_points_csv(data / "weak" / "points" / f"{path.stem}.csv", np.round(centres))
    proc = bundle_run(
        BUNDLE,
        ["train.json"],
        *["--dataset_dir", str(data), "--output_dir", str(tmp_path / "train"), "--ckpt_dir", str(tmp_path / "m")],
        *["--points_source", "files", "--mask_source", "threshold", "--train#trainer#max_epochs", "1"],
        *["--val_interval", "1", "--num_samples", "2", "--patch_size", "[64, 64]"],
        *SPECS["lacss"].small,
    )
    assert (tmp_path / "m" / "model.pt").is_file() and not (data / "labels").exists()
    out = proc.stdout + proc.stderr
    assert "val_point_f1" in out and "val_f1@0.5: nan" in out, out[-3000:]
