"""benchmarks/measure.py against independent references: hand-counted FLOPs, numpy's matmul, a child's allocation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.measure import forward_flops, machine_info, parameter_count, run_with_peak_rss

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "cin, cout, k, pad, h, w, batch",
    [(3, 8, 3, 1, 32, 40, 1), (3, 8, 3, 1, 32, 40, 2), (1, 4, 5, 0, 20, 17, 1), (16, 16, 1, 0, 8, 8, 3)],
)
def test_conv2d_flops_are_2_cin_cout_k2_hw(cin, cout, k, pad, h, w, batch):
    conv = torch.nn.Conv2d(cin, cout, k, padding=pad)
    out_h, out_w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    expected = 2 * cin * cout * k * k * out_h * out_w * batch
    assert forward_flops(conv, torch.zeros(batch, cin, h, w)) == expected


@pytest.mark.parametrize("rows, fin, fout", [(1, 16, 10), (4, 16, 10), (7, 3, 5)])
def test_linear_flops_are_2_in_out_per_row(rows, fin, fout):
    assert forward_flops(torch.nn.Linear(fin, fout), torch.zeros(rows, fin)) == 2 * rows * fin * fout


def test_flops_of_a_stack_add_up_and_elementwise_ops_count_zero():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(48, 5)
    )
    expected = 2 * 2 * 3 * 9 * 4 * 4 + 2 * 48 * 5
    assert forward_flops(net, torch.zeros(1, 2, 4, 4)) == expected
    assert forward_flops(torch.nn.ReLU(), torch.zeros(1, 2, 4, 4)) == 0


def test_parameter_count_by_hand():
    # conv: 3*8*3*3 weights + 8 biases; linear: 10*4 + 4
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(10, 4))
    assert parameter_count(net) == 3 * 8 * 9 + 8 + 10 * 4 + 4


def test_matmul_gflops_counts_2n3_flops_per_median_second(monkeypatch):
    # deterministic: the clock is replaced, so the test checks the accounting, not this machine's speed
    import benchmarks.measure as measure

    calls = []
    ticks = iter([0.0, 0.5, 1.0, 1.25, 2.0, 3.0] + [10.0] * 10)  # call durations 0.5, 0.25, 1.0 -> median 0.5 s
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(measure.torch, "mm", lambda a, b, out=None: calls.append(a.shape) or out)
    gflops = measure.matmul_gflops(n=100, repeats=3)
    assert gflops == pytest.approx(2 * 100**3 / 0.5 / 1e9)
    assert calls == [(100, 100)] * 4  # one warm-up + three timed products


def test_median_seconds_rejects_no_repeats():
    from benchmarks.measure import median_seconds

    with pytest.raises(ValueError, match="repeats"):
        median_seconds(lambda: None, repeats=0)


def test_peak_rss_of_child_grows_by_what_the_child_allocates(tmp_path):
    base = run_with_peak_rss([sys.executable, "-c", "import numpy as np"], tmp_path / "base.log")
    code = "import numpy as np; a = np.ones(200 * 2**20 // 8); print(a.sum())"  # 200 MiB, every page touched
    big = run_with_peak_rss([sys.executable, "-c", code], tmp_path / "big.log")
    assert base.returncode == 0 and big.returncode == 0
    assert 170 < big.peak_rss_mb - base.peak_rss_mb < 400, (base.peak_rss_mb, big.peak_rss_mb)
    # this test process holds torch (hundreds of MB): none of it may show up as the child's peak
    assert base.peak_rss_mb < 150, base.peak_rss_mb
    assert "26214400.0" in big.log.read_text()  # stdout went to the log
    assert big.seconds > 0


def test_child_exit_status_is_reported(tmp_path):
    run = run_with_peak_rss(
        [sys.executable, "-c", "import sys; print('bye', file=sys.stderr); sys.exit(3)"], tmp_path / "x.log"
    )
    assert run.returncode == 3
    assert "bye" in run.log.read_text()
    killed = run_with_peak_rss(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"], tmp_path / "k.log"
    )
    assert killed.returncode == 128 + 15
    missing = run_with_peak_rss(["/nonexistent/program"], tmp_path / "m.log")
    assert missing.returncode == 127 and "/nonexistent/program" in missing.log.read_text()
    with pytest.raises(ValueError, match="program"):
        run_with_peak_rss([], tmp_path / "y.log")


def test_machine_info_matches_the_os():
    info = machine_info()
    assert info["cores"] == len(os.sched_getaffinity(0))
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["torch"] == torch.__version__
    assert (info["gpu"] is None) == (not torch.cuda.is_available())
    assert isinstance(info["cpu"], str) and info["cpu"]
