"""InitWeights: a new run starts from the given weights, a resumed run from its own checkpoint, a bad file is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from cellseg_monai.guards.errors import describe_error
from cellseg_monai.handlers import InitWeights, InitWeightsError, TrainingCheckpoint, load_network_weights

BUNDLES = ["canonical_shape", "impartial", "lacss", "partial_maskrcnn", "sparse_seunet", "supervised_unet"]
REPO = Path(__file__).resolve().parents[2]


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))


def _params(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _trainer(net: torch.nn.Module, seen: list[dict[str, torch.Tensor]]) -> Engine:
    """A trainer whose first step records the network's weights before changing them (one SGD step)."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine: Engine, batch: torch.Tensor) -> float:
        seen.append(_params(net))
        opt.zero_grad()
        loss = net(batch).square().mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    engine = Engine(step)
    engine.optimizer = opt  # type: ignore[attr-defined]
    return engine


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


DATA = [torch.rand(2, 1, 8, 8) for _ in range(2)]


@pytest.mark.parametrize("layout", ["state_dict", "training_checkpoint", "ddp_prefix"])
def test_new_run_starts_from_the_file(tmp_path: Path, layout: str) -> None:
    source = _params(_net(1))
    saved = {
        "state_dict": source,
        "training_checkpoint": {"model": source, "optimizer": {"state": {}, "param_groups": []}},
        "ddp_prefix": {f"module.{k}": v for k, v in source.items()},
    }[layout]
    torch.save(saved, tmp_path / "init.pt")
    net = _net(2)
    assert not _same(_params(net), source)
    seen: list[dict[str, torch.Tensor]] = []
    trainer = _trainer(net, seen)
    InitWeights(str(tmp_path / "init.pt"), net, save_dir=str(tmp_path / "run")).attach(trainer)
    trainer.run(DATA, max_epochs=1)
    assert _same(seen[0], source)  # before the first step: exactly the file's weights
    assert not _same(_params(net), source)  # and training then moved them


def test_shipped_means_the_bundle_weights(tmp_path: Path) -> None:
    source = _params(_net(3))
    (tmp_path / "models").mkdir()
    torch.save(source, tmp_path / "models" / "model.pt")
    net = _net(4)
    InitWeights("shipped", net, bundle_root=str(tmp_path))(None)
    assert _same(_params(net), source)


def test_empty_path_trains_from_scratch(tmp_path: Path) -> None:
    net = _net(5)
    before = _params(net)
    handler = InitWeights("", net, bundle_root=str(tmp_path), save_dir=str(tmp_path))
    trainer = _trainer(net, [])
    handler.attach(trainer)
    assert not trainer.has_event_handler(handler, Events.STARTED)
    handler(None)
    assert _same(_params(net), before)


def test_resume_wins_over_init_ckpt(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # an interrupted run: one epoch, checkpoint_epoch=1.pt
    net = _net(6)
    first = _trainer(net, [])
    TrainingCheckpoint(str(run), net, first.optimizer).attach(first)
    first.run(DATA, max_epochs=1)
    resumed_from = load_network_weights(run / "checkpoint_epoch=1.pt")

    other = _params(_net(7))
    torch.save(other, tmp_path / "other.pt")
    net2 = _net(8)
    seen: list[dict[str, torch.Tensor]] = []
    second = _trainer(net2, seen)
    InitWeights(str(tmp_path / "other.pt"), net2, resume=True, save_dir=str(run)).attach(second)
    TrainingCheckpoint(str(run), net2, second.optimizer, resume=True).attach(second)
    second.run(DATA, max_epochs=2)
    assert len(seen) == len(DATA)  # only epoch 2 ran
    assert _same(seen[0], resumed_from)
    assert not _same(seen[0], other)


def test_resume_with_nothing_to_resume_loads_init_ckpt(tmp_path: Path) -> None:
    source = _params(_net(9))
    torch.save(source, tmp_path / "init.pt")
    net = _net(10)
    InitWeights(str(tmp_path / "init.pt"), net, resume=True, save_dir=str(tmp_path / "empty"))(None)
    assert _same(_params(net), source)


def test_resume_does_not_read_the_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}}, run / "checkpoint_epoch=3.pt")
    net = _net(11)
    before = _params(net)
    InitWeights(str(tmp_path / "does-not-exist.pt"), net, resume=True, save_dir=str(run))(None)
    assert _same(_params(net), before)


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "corrupt.pt").write_bytes(b"\x00not a torch file" * 10)
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "foreign.pt")
    torch.save(_params(torch.nn.Linear(3, 2)), tmp_path / "other_net.pt")
    wrong_shape = _params(_net(0))
    wrong_shape["2.weight"] = torch.zeros(3, 4, 1, 1)
    torch.save(wrong_shape, tmp_path / "wrong_shape.pt")
    return {
        "missing": (tmp_path / "nope.pt", "not found"),
        "corrupt": (tmp_path / "corrupt.pt", "not a readable PyTorch checkpoint"),
        "foreign": (tmp_path / "foreign.pt", "holds no network weights"),
        "other_net": (tmp_path / "other_net.pt", "does not fit this network"),
        "wrong_shape": (tmp_path / "wrong_shape.pt", "(3, 4, 1, 1) in the file, (2, 4, 1, 1) in the network"),
    }


@pytest.mark.parametrize("case", ["missing", "corrupt", "foreign", "other_net", "wrong_shape"])
def test_bad_file_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    path, problem = _bad_files(tmp_path)[case]
    with pytest.raises(InitWeightsError) as info:
        InitWeights(str(path), _net(0), save_dir=str(tmp_path))
    wrapped = RuntimeError("Failed to instantiate component 'SupervisedTrainer'")  # as MONAI wraps it
    wrapped.__cause__ = info.value
    lines, code = describe_error(wrapped)
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ") and problem in lines[0]
    assert code == 1


def test_not_strict_loads_what_fits(tmp_path: Path) -> None:
    source = _params(_net(12))
    source["2.weight"] = torch.ones(3, 4, 1, 1)  # e.g. a head with another number of classes
    source["2.bias"] = torch.ones(3)
    torch.save(source, tmp_path / "init.pt")
    net = _net(13)
    head_before = net[2].weight.detach().clone()
    InitWeights(str(tmp_path / "init.pt"), net, strict=False)(None)
    assert torch.equal(net[0].weight, source["0.weight"]) and torch.equal(net[0].bias, source["0.bias"])
    assert torch.equal(net[2].weight, head_before)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_train_config_offers_init_ckpt(bundle: str) -> None:
    config = json.loads((REPO / "bundles" / bundle / "configs" / "train.json").read_text())
    assert config["init_ckpt"] == ""  # default: from scratch
    handlers = [h for h in config["train"]["handlers"] if h.get("_target_", "").endswith("InitWeights")]
    assert len(handlers) == 1
    assert handlers[0]["path"] == "@init_ckpt" and handlers[0]["resume"] == "@resume"
    assert handlers[0]["save_dir"] == "@output_dir" and handlers[0]["network"] == "@network"
