from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events

from cellseg_monai.guards.lock import LOCK_FILE
from cellseg_monai.handlers.checkpoint import (
    NothingToResumeError,
    RunFolderInUseError,
    TrainingCheckpoint,
    latest_checkpoint,
)
from cellseg_monai.handlers.run_record import RunMismatchError, write_run_file


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


def test_resume_of_a_time_budget_schedule_keeps_its_training_time_and_the_new_budget(tmp_path, monkeypatch):
    from ignite.engine import Engine

    from cellseg_monai.handlers import TrainingCheckpoint
    from cellseg_monai.optimizers import BudgetOneCycleLR
    from cellseg_monai.optimizers import lr_scheduler as module

    now = [0.0]
    monkeypatch.setattr(module, "monotonic", lambda: now[0])

    def run(max_epochs: int, minutes: float, resume: bool) -> BudgetOneCycleLR:
        net = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        sched = BudgetOneCycleLR(opt, max_lr=0.1, total_steps=1000, minutes=minutes)

        def step(engine, batch):
            now[0] += 6.0  # every iteration takes 6 s
            opt.step()
            sched.step()

        engine = Engine(step)
        TrainingCheckpoint(str(tmp_path), net, opt, lr_scheduler=sched, resume=resume).attach(engine)
        engine.run([0, 1], max_epochs=max_epochs)
        return sched

    first = run(2, 1.0, False)  # 4 iterations: 18 s on the schedule's clock (it starts at the first step)
    assert first.elapsed_seconds() == pytest.approx(18.0)
    resumed = run(3, 2.0, True)  # 2 more iterations, the clock again from the first: 24 s of a budget now 2 min
    assert resumed.minutes == 2.0 and resumed.last_epoch == 6
    assert resumed.elapsed_seconds() == pytest.approx(24.0)
    assert resumed.progress_step() == 200  # 24 s of 120 s: a fifth of the cycle (the steps alone: 6 of 1000)


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
    assert seen == [[LOCK_FILE]]  # old checkpoints and best model gone before the first iteration; the run's lock
    assert not (tmp_path / LOCK_FILE).exists()  # released when the run completes
    assert latest_checkpoint(tmp_path).endswith("=1.pt")  # a later resume finds this run, not the old epoch 3


def test_an_empty_or_unrelated_folder_is_fine(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    net = torch.nn.Linear(2, 1)
    _engine_with(net, torch.optim.SGD(net.parameters(), lr=0.1), tmp_path, resume=False).run([0], max_epochs=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --- the run's identity (run.json) and what a resume refuses -------------------------------------------------------

IDENTITY = {"bundle": "b", "dataset_dir": "/d", "train_ids": ["a"], "seed": 0, "config": {"learning_rate": 0.1}}


def _engine(tmp_path, resume=False, identity=IDENTITY, overwrite=False):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = Engine(lambda e, b: opt.step())
    TrainingCheckpoint(str(tmp_path), net, opt, resume=resume, overwrite=overwrite, run_identity=identity).attach(
        engine
    )
    return engine


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_new_run_records_itself_when_it_starts(tmp_path):
    engine = _engine(tmp_path)
    assert list(tmp_path.iterdir()) == []  # building the trainer writes nothing
    engine.run([0], max_epochs=1)
    assert json.loads((tmp_path / "run.json").read_text()) == IDENTITY
    assert latest_checkpoint(tmp_path).endswith("=1.pt")


def test_resume_of_the_same_run_goes_on(tmp_path):
    _engine(tmp_path).run([0], max_epochs=2)
    engine = _engine(tmp_path, resume=True, identity=json.loads(json.dumps(IDENTITY)))
    engine.run([0], max_epochs=4)
    assert engine.state.epoch == 4 and latest_checkpoint(tmp_path).endswith("=4.pt")


@pytest.mark.parametrize(
    "identity, message",
    [
        ({**IDENTITY, "seed": 1}, "this folder holds another run: the seed differs (run: 0, now: 1)"),
        ({**IDENTITY, "config": {"learning_rate": 0.2}}, "the config differs at learning_rate (run: 0.1, now: 0.2)"),
    ],
)
def test_resume_of_another_run_is_refused_and_changes_nothing(tmp_path, identity, message):
    _engine(tmp_path).run([0], max_epochs=2)
    before = _files(tmp_path)
    with pytest.raises(RunMismatchError) as info:
        _engine(tmp_path, resume=True, identity=identity).run([0], max_epochs=4)
    assert str(info.value).startswith(f"{tmp_path / 'run.json'}: --resume refused, ")
    assert message in str(info.value)
    assert _files(tmp_path) == before


def test_resume_of_checkpoints_without_a_run_record_is_refused(tmp_path):
    _engine(tmp_path, identity=None).run([0], max_epochs=1)  # e.g. written before run.json existed
    with pytest.raises(RunMismatchError, match=r"run\.json: --resume refused, the folder holds checkpoints "):
        _engine(tmp_path, resume=True).run([0], max_epochs=3)


@pytest.mark.parametrize("max_epochs", [2, 1])
def test_nothing_to_resume_when_the_checkpoint_reached_max_epochs(tmp_path, max_epochs):
    _engine(tmp_path).run([0], max_epochs=2)
    with pytest.raises(NothingToResumeError) as info:
        _engine(tmp_path, resume=True).run([0], max_epochs=max_epochs)
    assert str(info.value) == (
        f"{tmp_path / 'checkpoint_epoch=2.pt'}: nothing to resume: checkpoint epoch 2 \u2265 max_epochs {max_epochs}; "
        "pass a larger --train#trainer#max_epochs to train on"
    )


def test_resume_before_the_first_checkpoint_starts_the_same_run_afresh(tmp_path):
    """Killed after validation wrote model.pt but before checkpoint_epoch=1.pt: the same run may go on, another
    run may not take the folder."""
    write_run_file(tmp_path, IDENTITY)
    (tmp_path / "model.pt").write_bytes(b"best of epoch 1")
    with pytest.raises(RunFolderInUseError, match=r"model\.pt"):
        _engine(tmp_path, resume=True, identity={**IDENTITY, "seed": 5}).run([0], max_epochs=1)
    _engine(tmp_path, resume=True).run([0], max_epochs=1)
    assert latest_checkpoint(tmp_path).endswith("=1.pt")


# --- a resumed run repeats the uninterrupted one ---------------------------------------------------------------------


def _train(folder, max_epochs, resume=False):
    """A MONAI trainer whose every step draws random numbers: shuffling, random transforms, dropout."""
    from monai.data import CacheDataset, DataLoader
    from monai.engines import SupervisedTrainer
    from monai.transforms import Compose, RandFlipd, RandGaussianNoised, RandSpatialCropd
    from monai.utils import set_determinism

    set_determinism(seed=0)
    data = [{"image": torch.rand(1, 8, 8), "label": torch.rand(1, 4, 4)} for _ in range(6)]
    transform = Compose(
        [
            RandSpatialCropd(keys="image", roi_size=(4, 4), random_size=False),
            RandFlipd(keys=["image", "label"], prob=0.5),
            RandGaussianNoised(keys="image", prob=0.5),
        ]
    )
    loader = DataLoader(CacheDataset(data, transform, progress=False), batch_size=2, shuffle=True)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Dropout(0.3), torch.nn.Conv2d(4, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    handler = TrainingCheckpoint(str(folder), net, opt, resume=resume, run_identity=IDENTITY)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=net,
        optimizer=opt,
        loss_function=torch.nn.MSELoss(),
        train_handlers=[handler],
    )
    trainer.run()
    return net


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    whole = _train(tmp_path / "whole", 4)
    _train(tmp_path / "parts", 2)  # = killed right after checkpoint_epoch=2.pt
    resumed = _train(tmp_path / "parts", 4, resume=True)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    saved = torch.load(tmp_path / "parts" / "checkpoint_epoch=4.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in whole.state_dict().items())


def test_a_resumed_run_keeps_the_best_model_of_the_epochs_before(tmp_path):
    """model.pt is replaced only by a better model after a resume too, not by the first one validated."""
    from monai.handlers import CheckpointSaver

    scores = {1: 0.5, 2: 0.9, 3: 0.6, 4: 0.7}  # validation score after each epoch: epoch 2 is the best

    def run(max_epochs, resume):
        net = torch.nn.Linear(1, 1, bias=False)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        trainer = Engine(lambda e, b: torch.nn.init.constant_(net.weight, e.state.epoch))  # weight = epoch
        evaluator = Engine(lambda e, b: None)
        evaluator.add_event_handler(
            Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(f1=scores[trainer.state.epoch])
        )
        best = CheckpointSaver(
            str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="f1", key_metric_filename="model.pt"
        )
        best.attach(evaluator)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))  # as ValidationHandler does
        TrainingCheckpoint(str(tmp_path), net, opt, resume=resume, run_identity=IDENTITY, best_model=best).attach(
            trainer
        )
        trainer.run([0], max_epochs=max_epochs)

    run(2, resume=False)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].item() == 2
    run(4, resume=True)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].item() == 2  # not 3 (0.6) nor 4 (0.7)
