"""benchmarks/speed.py's pure parts against hand counts: FLOPs of a tiled inference (overlap included), the
efficiency (never clipped), the peer ratios and the synthetic nuclei."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer
from scipy import ndimage
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.measure import conv3x3_gflops, efficiency
from benchmarks.speed import jittered_grid_nuclei, peer_ratios, s_per_mp


def _conv_flops(cin: int, cout: int, k: int, h: int, w: int) -> int:
    return 2 * cin * cout * k * k * h * w


@pytest.mark.parametrize(
    "size, roi, overlap, windows",
    [
        (64, 64, 0.25, 1),  # one tile
        (96, 64, 0.5, 4),  # interval 32: 2 × 2 windows, each a full 64² tile
        (160, 64, 0.25, 9),  # interval 48: ceil((160 - 64) / 48) + 1 = 3 per side
        (40, 64, 0.25, 1),  # smaller than the tile: padded to one 64² tile, FLOPs of the padded tile
    ],
)
def test_flops_of_a_tiled_inference_count_every_window(size, roi, overlap, windows):
    """What the inferer executes, not what the image needs: overlap and padding are paid for."""
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).eval()
    inferer = SlidingWindowInferer(roi_size=(roi, roi), sw_batch_size=2, overlap=overlap, mode="constant")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        inferer(torch.zeros(1, 2, size, size), conv)
    assert counter.get_total_flops() == windows * _conv_flops(2, 3, 3, roi, roi)


def test_efficiency_uses_the_larger_peak_and_never_clips():
    achieved, fraction = efficiency(200e9, 2.0, [50.0, 80.0])  # 100 GFLOP/s against max(50, 80)
    assert achieved == pytest.approx(100.0) and fraction == pytest.approx(1.25)  # > 1 shown, i.e. a wrong count
    assert efficiency(40e9, 1.0, [80.0, 50.0])[1] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        efficiency(1e9, 1.0, [])
    with pytest.raises(ValueError):
        efficiency(1e9, 0.0, [10.0])


def test_peer_ratios_and_seconds_per_megapixel():
    assert s_per_mp(3.0, 1000, 2000) == pytest.approx(1.5)
    assert peer_ratios(2.0, {"a": 10.0, "b": None, "c": 1.0}) == {"a": 5.0, "b": None, "c": 0.5}


@pytest.mark.parametrize("size, count", [(128, 10), (512, 100), (1024, 1000), (1024, 5000)])
def test_synthetic_nuclei_are_count_separate_discs(size, count):
    image, labels = jittered_grid_nuclei(size, count, seed=3)
    assert image.dtype == np.float32 and image.shape == labels.shape == (size, size)
    assert 0 <= image.min() and image.max() <= 1
    assert sorted(np.unique(labels))[1:] == list(range(1, count + 1))
    _, components = ndimage.label(labels > 0)  # no two nuclei touch
    assert components == count
    area = np.bincount(labels.ravel())[1:]
    radius = min(9.0, 0.35 * size / math.ceil(math.sqrt(count)))
    assert np.all(area >= 0.8 * math.pi * radius**2)  # whole discs, none cut by the border
    assert image[labels > 0].mean() > 0.5 > image[labels == 0].mean()


def test_too_many_nuclei_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        jittered_grid_nuclei(64, 5000)


def test_conv3x3_peak_is_positive_and_finite():
    gflops = conv3x3_gflops(channels=8, size=32, batch=1, repeats=2)
    assert 0 < gflops < 1e6


@pytest.mark.parametrize(
    "sizes, peer_sizes, ref",
    [([512, 1024, 4096], [512, 1024], 1024), ([512], [512], 512), ([512, 1024], [], 1024), ([256, 512], [256], 256)],
)
def test_reference_size_is_1024_when_both_ran_it(sizes, peer_sizes, ref):
    from benchmarks.speed import reference_size

    assert reference_size(sizes, peer_sizes) == ref


def test_device_option_lifts_the_address_space_cap_on_cuda_only():
    from benchmarks.speed import parse_args

    cpu, gpu = parse_args([]), parse_args(["--device", "cuda"])
    assert cpu.device == "cpu" and cpu.memory_cap_mb == 12288  # a CPU child gets MemoryError, not the OOM killer
    assert gpu.device == "cuda" and gpu.memory_cap_mb == 0  # CUDA reserves more address space than any cap
