"""benchmarks/learning_curve.py: checkpoints found by epoch, minutes from a schedule's state or a hand-made log."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.learning_curve import checkpoint_minutes, checkpoints, log_minutes, markdown

LOG = (
    "2026-12-06 03:35:10,000 - root - INFO - starting\n"
    "Epoch [1/9]: [25/25] 100%\r2026-12-06 03:35:40,000 - ignite.engine.engine.SupervisedTrainer - INFO - "
    "Epoch[1] Complete. Time taken: 00:00:30\n"
    "2026-12-06 03:35:41,000 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[1] Complete. Time taken: 1\n"
    "2026-12-06 03:37:10,500 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[2] Complete. Time taken: 1\n"
)


def test_log_minutes_by_hand() -> None:
    got = log_minutes(LOG)
    assert got == {1: pytest.approx(0.5), 2: pytest.approx(2.0 + 0.5 / 60)}  # the evaluator's line is not counted
    assert log_minutes("no time stamps here") == {}


def test_checkpoints_and_their_minutes(tmp_path: Path) -> None:
    for epoch in (22, 3, 110):
        (tmp_path / f"checkpoint_epoch={epoch}.pt").write_bytes(b"")
    (tmp_path / "model.pt").write_bytes(b"")
    assert list(checkpoints(tmp_path)) == [3, 22, 110]
    scheduled = tmp_path / "a.pt"
    torch.save({"model": {}, "lr_scheduler": {"_elapsed_before": 300.0}}, str(scheduled))
    assert checkpoint_minutes(scheduled, {7: 1.0}, 7) == pytest.approx(5.0)  # the schedule's clock wins
    constant = tmp_path / "b.pt"
    torch.save({"model": {}, "optimizer": {}}, str(constant))
    assert checkpoint_minutes(constant, {7: 1.5}, 7) == pytest.approx(1.5)
    assert checkpoint_minutes(constant, {}, 7) is None


def test_markdown_rows() -> None:
    doc = {
        "bundle": "lacss",
        "name": "run",
        "command": "cmd",
        "run": "runs/x",
        "overrides": [],
        "machine": {"cpu": "EPYC", "cores": 2},
        "val_images": 67,
        "rows": [{"epoch": 22, "minutes": 5.04, "f1@0.5": 0.5, "ap_dsb@0.5": 0.4, "aji": None, "coco_ap": 0.2}],
    }
    text = markdown(doc)
    assert "| 22 | 5.0 | 0.500 | 0.400 |  | 0.200 |" in text
