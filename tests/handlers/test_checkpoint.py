from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from cellseg_monai.handlers.checkpoint import RunFolderInUseError, TrainingCheckpoint, latest_checkpoint


def test_latest_checkpoint_picks_highest_epoch(tmp_path):
    assert latest_checkpoint(tmp_path) == ""
    for n in (2, 10, 9):
        (tmp_path / f"checkpoint_epoch={n}.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_epoch=10.pt")


def _engine_with(net, opt, tmp_path, resume):
    def step(engine, batch):
        opt.zero_grad()
        loss = net(torch.ones(1, 2)).sum()
        loss.backward()
        opt.step()
        return loss.item()

    engine = Engine(step)
    TrainingCheckpoint(str(tmp_path), net, opt, resume=resume).attach(engine)
    return engine


def test_save_then_resume_restores_weights_and_epoch(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    _engine_with(net, opt, tmp_path, resume=False).run([0, 1], max_epochs=3)
    saved = latest_checkpoint(tmp_path)
    assert saved.endswith("=3.pt")
    trained = {k: v.clone() for k, v in net.state_dict().items()}

    net2 = torch.nn.Linear(2, 1)
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.1)
    engine2 = _engine_with(net2, opt2, tmp_path, resume=True)
    seen = []
    engine2.add_event_handler(Events.STARTED, lambda e: seen.append((e.state.epoch, net2.weight.detach().clone())))
    engine2.run([0, 1], max_epochs=5)
    start_epoch, start_weight = seen[0]
    assert start_epoch == 3
    assert torch.equal(start_weight, trained["weight"])
    assert engine2.state.epoch == 5


def test_resume_keeps_the_new_length_of_a_one_cycle_schedule(tmp_path):
    """A run resumed with more epochs keeps its checkpoint's position and the new config's schedule length."""
    from ignite.engine import Engine

    from cellseg_monai.handlers import TrainingCheckpoint

    def run(max_epochs: int, resume: bool) -> torch.optim.lr_scheduler.OneCycleLR:
        net = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=max_epochs * 2)
        engine = Engine(lambda e, b: (opt.step(), sched.step()))
        TrainingCheckpoint(str(tmp_path), net, opt, lr_scheduler=sched, resume=resume).attach(engine)
        engine.run([0, 1], max_epochs=max_epochs)
        return sched

    assert run(2, False).last_epoch == 4
    sched = run(5, True)  # would raise "Tried to step 5 times" with the checkpoint's total_steps of 4
    assert sched.total_steps == 10 and sched.last_epoch == 10


def test_a_new_run_refuses_a_folder_of_another_run(tmp_path):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    _engine_with(net, opt, tmp_path, resume=False).run([0, 1], max_epochs=2)
    (tmp_path / "model.pt").write_bytes(b"best model of the first run")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    engine = _engine_with(net, opt, tmp_path, resume=False)  # building it (a config check) is fine
    with pytest.raises(RunFolderInUseError, match=r"checkpoint_epoch=2\.pt, model\.pt.*--output_dir"):
        engine.run([0, 1], max_epochs=2)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing touched


def test_overwrite_replaces_the_previous_run(tmp_path):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    _engine_with(net, opt, tmp_path, resume=False).run([0, 1], max_epochs=3)
    (tmp_path / "model.pt").write_bytes(b"old")
    engine = Engine(lambda e, b: None)
    TrainingCheckpoint(str(tmp_path), net, opt, overwrite=True).attach(engine)
    seen = []
    engine.add_event_handler(Events.STARTED, lambda _: seen.append(sorted(p.name for p in tmp_path.iterdir())))
    engine.run([0], max_epochs=1)
    assert seen == [[]]  # old checkpoints and best model gone before the first iteration
    assert latest_checkpoint(tmp_path).endswith("=1.pt")  # a later resume finds this run, not the old epoch 3


def test_an_empty_or_unrelated_folder_is_fine(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    net = torch.nn.Linear(2, 1)
    _engine_with(net, torch.optim.SGD(net.parameters(), lr=0.1), tmp_path, resume=False).run([0], max_epochs=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"
