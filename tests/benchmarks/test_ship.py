"""``benchmarks/ship.py``: what installing shipped weights writes into a bundle (on a copy), and the weights format."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import benchmarks.ship as ship  # noqa: E402
from benchmarks.ship import DOCS_END, DOCS_START, install, network_state_dict, training_machine  # noqa: E402

RECORD = {
    "bundle": "supervised_unet",
    "command": "OMP_NUM_THREADS=1 python benchmarks/ship.py supervised_unet --minutes 3",
    "machine_name": "cpu2",
    "machine": {"cpu": "test CPU"},
    "threads": 1,
    "seed": 0,
    "train": {"seconds": 180.0, "iterations": 42, "epochs": 2, "peak_rss_mb": 100.0, "minutes": 3.0},
    "val_images": 67,
    "val": {"f1@0.5": 0.81234, "ap_dsb@0.5": 0.7},
}


@pytest.fixture
def bundle(tmp_path) -> Path:
    copy = tmp_path / "supervised_unet"
    shutil.copytree(REPO / "bundles" / "supervised_unet", copy, ignore=shutil.ignore_patterns("runs", "*.pt"))
    return copy


def test_install_writes_weights_metadata_hash_and_docs(bundle, tmp_path):
    net = torch.nn.Conv2d(3, 2, 3)
    weights = tmp_path / "new.pt"
    torch.save(net.state_dict(), weights)
    record = {**RECORD, "md5": hashlib.md5(weights.read_bytes()).hexdigest()}
    install(bundle, weights, record)

    assert (bundle / "models" / "model.pt").read_bytes() == weights.read_bytes()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"] == {"f1@0.5": 0.812, "ap_dsb@0.5": 0.7}
    assert RECORD["command"] in meta["eval_metrics_source"] and "42 iterations" in meta["eval_metrics_source"]
    assert (bundle / "configs" / "metadata.json").read_text() == json.dumps(meta, indent=4) + "\n"  # zoo format
    assert f'hash_val: "{record["md5"]}"' in (bundle / "large_files.yml").read_text()
    docs = (bundle / "docs" / "README.md").read_text()
    section = docs.split(DOCS_START)[1].split(DOCS_END)[0]
    assert RECORD["command"] in section and "| 0.812 | 0.700 |" in section
    assert docs.index("## Performance") < docs.index(DOCS_START) < docs.index("## Commands")

    install(bundle, weights, {**record, "val": {"f1@0.5": 0.5}})  # a second install replaces, not appends
    docs = (bundle / "docs" / "README.md").read_text()
    assert docs.count(DOCS_START) == 1 and "| 0.500 |" in docs and "0.812" not in docs


def test_network_state_dict_from_a_training_checkpoint_or_a_plain_state_dict(tmp_path):
    net = torch.nn.Linear(2, 3).double()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "ckpt.pt")
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    for name in ("ckpt.pt", "plain.pt"):
        state = network_state_dict(tmp_path / name)
        assert set(state) == {"weight", "bias"} and state["weight"].dtype == torch.float32
        torch.testing.assert_close(state["weight"], net.weight.float())
    torch.save({"optimizer": opt.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        network_state_dict(tmp_path / "other.pt")


def test_reuse_keeps_the_machine_and_threads_of_the_training_it_scores_again():
    previous = {
        **RECORD,
        "md5": "abc",
        "threads": torch.get_num_threads() + 5,
        "machine": {"cpu": "the training's CPU"},
    }
    assert training_machine(previous, "abc", reuse=True) == ({"cpu": "the training's CPU"}, previous["threads"])
    here = training_machine(previous, "abc", reuse=False)  # a new training: this process
    assert here[1] == torch.get_num_threads() and here[0] != previous["machine"]
    assert training_machine(previous, "other weights", reuse=True)[1] == torch.get_num_threads()
    assert training_machine(None, "abc", reuse=True)[1] == torch.get_num_threads()


def test_weights_are_scored_without_training_and_never_installed(tmp_path, monkeypatch, capsys):
    import benchmarks.ship as ship
    from cellseg_monai.data import sample_data_dir

    net = torch.nn.Conv2d(1, 1, 1)
    given = tmp_path / "given.pt"
    torch.save({"model": net.state_dict()}, given)  # a training checkpoint: its network part is what gets scored
    seen = {}

    def no_training(*args, **kwargs):
        raise AssertionError("--weights must not train")

    def fake_evaluate(bundle, data, work, ckpt, gt_dir, overrides, reuse):
        seen.update(ckpt=ckpt, overrides=overrides, reuse=reuse)
        return {"missing": [], "per_image_mean": {"f1@0.5": 0.5}}

    monkeypatch.setattr(ship, "train_bundle", no_training)
    monkeypatch.setattr(ship, "evaluate_bundle", fake_evaluate)
    monkeypatch.setattr(ship, "write_val_labels", lambda data, gt_dir: ["a"])
    work = tmp_path / "work"
    argv = ["supervised_unet", "--data", str(sample_data_dir()), "--weights", str(given), "--no-install"]
    assert ship.main([*argv, "--work", str(work), "--reuse", "--set", "test_time_augmentation=flips"]) == 0
    saved = torch.load(work / "model.pt")
    assert set(saved) == set(net.state_dict()) and torch.equal(saved["weight"], net.weight)
    assert seen == {"ckpt": str(work / "model.pt"), "overrides": ["test_time_augmentation=flips"], "reuse": False}
    assert '"f1@0.5": 0.5' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ship.main(argv[:-1])  # installing weights this command did not train is refused
    assert "--weights needs --no-install" in capsys.readouterr().err


def test_several_weights_are_scored_as_one_ensemble(tmp_path, monkeypatch):
    from cellseg_monai.data import sample_data_dir

    nets = [torch.nn.Conv2d(1, 1, 1) for _ in range(2)]
    files = []
    for i, net in enumerate(nets):
        files.append(tmp_path / f"w{i}.pt")
        torch.save(net.state_dict(), files[-1])
    seen = {}

    def fake_evaluate(bundle, data, work, ckpt, gt_dir, overrides, reuse):
        seen.update(overrides=overrides)
        return {"missing": [], "per_image_mean": {}}

    monkeypatch.setattr(ship, "evaluate_bundle", fake_evaluate)
    monkeypatch.setattr(ship, "write_val_labels", lambda data, gt_dir: ["a"])
    work = tmp_path / "work"
    argv = ["impartial", "--data", str(sample_data_dir()), "--weights", *map(str, files), "--ensemble", "mixture"]
    assert ship.main([*argv, "--no-install", "--work", str(work)]) == 0
    saved = torch.load(work / "model.pt")
    assert sorted(saved) == ["members.0.bias", "members.0.weight", "members.1.bias", "members.1.weight"]
    assert torch.equal(saved["members.1.weight"], nets[1].weight)
    assert seen["overrides"] == [ship.ensemble_override("mixture", 2)]
    with pytest.raises(SystemExit):  # one file is no ensemble
        ship.main(["impartial", "--weights", str(files[0]), "--ensemble", "mixture", "--no-install"])


@pytest.mark.parametrize("kind", ["average", "mixture"])
def test_the_ensemble_override_builds_that_ensemble_from_the_impartial_config(kind):
    from monai.bundle import ConfigParser

    from cellseg_monai.networks import AverageEnsemble, MixtureAverageEnsemble

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "impartial" / "configs" / "train.json"))
    key, value = ship.ensemble_override(kind, 3).split("=", 1)
    parser[key] = value
    parser["device"] = "$torch.device('cpu')"
    network = parser.get_parsed_content("network")
    assert type(network) is {"average": AverageEnsemble, "mixture": MixtureAverageEnsemble}[kind]
    assert len(network.members) == 3
    if kind == "mixture":
        assert network.classes == list(parser.get_parsed_content("classes"))


def test_a_reused_training_is_recorded_only_under_its_own_budget():
    from benchmarks.ship import check_reused_minutes

    check_reused_minutes(5146.0, 85.0)  # an 85-minute run that stopped at its first epoch end past the budget
    check_reused_minutes(60.0 * 20 + 299.0, 20.0)
    with pytest.raises(SystemExit, match="ran 85.8 min, not --minutes 20"):
        check_reused_minutes(5146.0, 20.0)


def test_a_rescored_shipped_training_keeps_its_recorded_log(tmp_path):
    from benchmarks.ship import LOG_LINES, write_training_log

    recorded = tmp_path / "impartial-train.log"
    recorded.write_text("the training's own log\n")
    work_log = tmp_path / "train.log"
    work_log.write_text("\n".join(f"line {i}" for i in range(LOG_LINES + 5)) + "\n")
    shipped = {**RECORD, "md5": "abc"}
    # the same weights scored again: the recorded log stays
    assert not write_training_log(recorded, work_log, shipped, reused=shipped)
    assert recorded.read_text() == "the training's own log\n"
    # other weights, or a fresh training: the work folder's log, its last LOG_LINES lines
    for reused in ({**RECORD, "md5": "other"}, None):
        recorded.write_text("old\n")
        assert write_training_log(recorded, work_log, shipped, reused=reused)
        lines = recorded.read_text().splitlines()
        assert len(lines) == LOG_LINES and lines[0] == "line 5" and lines[-1] == f"line {LOG_LINES + 4}"
