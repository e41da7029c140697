"""benchmarks/train_precision.py's report on hand-made records (the timings themselves are the benchmark's job)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.train_precision import _error_line, markdown, speedup  # noqa: E402


def test_speedup_is_float32_time_over_bfloat16_time():
    assert speedup({"float32": {"s_per_iteration": 1.5}, "bfloat16": {"s_per_iteration": 0.75}}) == pytest.approx(2.0)
    assert speedup({"float32": {"s_per_iteration": 1.5}, "bfloat16": {"error": "failed: x"}}) is None


def test_markdown_rows_say_the_default_and_the_failures():
    record = {
        "command": "python benchmarks/train_precision.py",
        "machine_name": "m",
        "machine": {"cpu": "CPU", "cores": 2, "torch": "2.x"},
        "native_bfloat16": True,
        "threads": 1,
        "iterations": 3,
        "load_before": [0.1, 0.1, 0.1],
        "load_after": [1.0, 1.0, 1.0],
        "total_minutes": 1.0,
        "bundles": {
            "a": {
                "default": "auto",
                "float32": {"s_per_iteration": 1.0, "batch_patches": 8.0},
                "bfloat16": {"s_per_iteration": 0.5, "batch_patches": 8.0},
            },  # fmt: skip
            "b": {"default": "float32", "float32": {"error": "failed: boom"}, "bfloat16": {"error": "failed: boom"}},
        },
    }
    text = markdown(record)
    assert "| a | 8 | 1.000 | 0.500 | 2.00× | auto |" in text
    assert "| b | — | failed: boom | failed: boom | — | float32 |" in text
    assert record["command"] in text and "native bfloat16: True" in text


def test_the_error_shown_is_the_exception_not_the_progress_bar():
    out = "Epoch [1/9]: 10%\nTraceback (most recent call last):\n  File x\nValueError: bad thing\nEpoch [1/9]: 20%|██"
    assert _error_line(out) == "ValueError: bad thing"
    assert _error_line("just a line\n") == "just a line" and _error_line("") == "no output"
