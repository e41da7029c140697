"""Tests of cellseg_monai.handlers.run_record: what a run is, how run.json records it, which differences refuse."""

from __future__ import annotations

import hashlib
import json

import pytest
from monai.bundle import ConfigParser

from cellseg_monai.handlers.run_record import (
    RUN_FILE,
    RunMismatchError,
    check_same_run,
    read_run_file,
    run_identity,
    write_run_file,
)

DATALIST = [{"image": "/d/images/b.tif", "id": "b"}, {"image": "/d/images/a.tif", "id": "a"}]
CONFIG = {
    "_meta_": {"version": "0.1.0"},
    "learning_rate": 0.001,
    "patch_size": (64, 64),
    "network_def": {"_target_": "Net", "features": [4, 8]},
    "max_epochs": 3,
    "train": {"trainer": {"max_epochs": 3, "lr": "@learning_rate"}, "dataloader": {"num_workers": 0}},
    "output_dir": "/somewhere",
    "device": "cpu",
    "seed": 0,
}


def test_identity_fields_and_what_the_config_leaves_out(tmp_path):
    (tmp_path / "my_bundle").mkdir()
    ident = run_identity(tmp_path / "my_bundle", tmp_path / "data" / ".." / "data", DATALIST, 7, config=CONFIG)
    expected_config = {
        "learning_rate": 0.001,
        "network_def#_target_": "Net",
        "network_def#features#0": 4,
        "network_def#features#1": 8,
        "patch_size#0": 64,
        "patch_size#1": 64,
        "train#trainer#lr": "@learning_rate",
    }
    assert ident == {
        "bundle": "my_bundle",
        "dataset_dir": str((tmp_path / "data").resolve()),
        "train_ids": ["a", "b"],
        "seed": 7,
        "config_sha256": hashlib.sha256(json.dumps(expected_config, sort_keys=True).encode()).hexdigest(),
        "config": expected_config,
    }


def test_the_bundle_name_follows_symlinks(tmp_path):
    (tmp_path / "impartial").mkdir()
    (tmp_path / "imppartial").symlink_to(tmp_path / "impartial")
    assert run_identity(tmp_path / "imppartial", tmp_path, DATALIST, 0, config={})["bundle"] == "impartial"


def test_a_config_expression_gets_the_config_of_its_parser(tmp_path):
    parser = ConfigParser(
        {
            "imports": ["$import cellseg_monai"],
            "bundle_root": str(tmp_path),
            "dataset_dir": str(tmp_path),
            "datalist": [{"id": "x"}],
            "seed": 0,
            "learning_rate": 0.5,
            "run_identity": "$cellseg_monai.handlers.run_identity(@bundle_root, @dataset_dir, @datalist, @seed)",
        }
    )
    parser.update({"learning_rate": 0.25})  # a command-line override
    ident = parser.get_parsed_content("run_identity")
    assert ident["config"] == {"datalist#0#id": "x", "learning_rate": 0.25}
    assert "config" not in run_identity(tmp_path, tmp_path, [{"id": "x"}], 0)  # outside a parser: no config


def test_run_file_round_trip_and_unreadable_file(tmp_path):
    ident = run_identity(tmp_path, tmp_path, DATALIST, 0, config=CONFIG)
    assert read_run_file(tmp_path) is None
    path = write_run_file(tmp_path, ident)
    assert path == tmp_path / RUN_FILE and path.read_text().startswith('{\n    "bundle"')
    assert read_run_file(tmp_path) == ident
    check_same_run(read_run_file(tmp_path), ident, tmp_path)  # JSON round trip (tuples → lists) still matches
    path.write_text("{not json")
    with pytest.raises(RunMismatchError, match=rf"^{path}: cannot read the run's identity"):
        read_run_file(tmp_path)


def _changed(**changes):
    config = {**CONFIG, **changes.pop("config", {})}
    args = {"bundle_root": "/b/supervised_unet", "dataset_dir": "/d", "datalist": DATALIST, "seed": 0, **changes}
    return run_identity(config=config, **args)


SAME = [
    {"config": {"max_epochs": 50, "train": {"trainer": {"max_epochs": 50, "lr": "@learning_rate"}}}},
    {"config": {"device": "cuda:0", "output_dir": "/elsewhere", "_meta_": {"version": "0.2.0"}}},
    {"config": {"train": {**CONFIG["train"], "dataloader": {"num_workers": 4}}}},
]
DIFFERENT = [
    ({"bundle_root": "/b/impartial"}, "the bundle differs (run: 'supervised_unet', now: 'impartial')"),
    ({"dataset_dir": "/e"}, "the dataset_dir differs (run: '/d', now: '/e')"),
    ({"datalist": [*DATALIST, {"id": "c"}]}, "the training images differ (now also c)"),
    ({"datalist": DATALIST[:1]}, "the training images differ (no longer a)"),
    ({"seed": 1}, "the seed differs (run: 0, now: 1)"),
    ({"config": {"learning_rate": 0.01}}, "the config differs at learning_rate (run: 0.001, now: 0.01)"),
    (
        {"config": {"network_def": {"_target_": "Net", "features": [8, 16, 32]}}},
        "the config differs at network_def#features#0 (run: 4, now: 8) and 2 more id(s)",
    ),
]


@pytest.mark.parametrize("changes", SAME)
def test_what_may_change_on_resume(changes):
    check_same_run(_changed(), _changed(**changes), "/runs/a")


@pytest.mark.parametrize("changes, difference", DIFFERENT)
def test_what_refuses_a_resume_names_the_first_difference(changes, difference):
    with pytest.raises(RunMismatchError) as info:
        check_same_run(_changed(), _changed(**changes), "/runs/a")
    assert str(info.value) == (
        f"/runs/a/run.json: --resume refused, this folder holds another run: {difference}; resume with the run's own "
        "settings, or start a new run in another --output_dir"
    )
