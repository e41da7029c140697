"""FittedSlidingWindowInferer (tiles fitted to the image) and FastInferer (precision / layout wrapper)."""

from __future__ import annotations

import math

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from cellseg_monai.inferers import FastInferer, FittedSlidingWindowInferer, autocast_dtype, fitted_tiles
from cellseg_monai.inferers import precision as precision_module


@pytest.mark.parametrize(
    "size, roi, overlap, k, expected",
    [
        (1024, 1024, 64, 8, (1024, 1)),  # one tile: no overlap, no padding
        (1025, 1024, 64, 8, (552, 2)),  # ceil((1025 + 64) / 2) = 545 -> 552
        (4096, 1024, 64, 16, (880, 5)),  # ceil((4096 - 64) / 960) = 5 tiles of ceil(4352 / 5) = 871 -> 880
        (300, 512, 64, 16, (304, 1)),  # smaller than a tile: padded to a multiple of 16 only
        (1, 512, 64, 16, (16, 1)),
        (45, 256, 32, 8, (48, 1)),
    ],
)
def test_fitted_tiles_by_hand(size, roi, overlap, k, expected):
    side, n = fitted_tiles(size, roi, overlap, k)
    assert (side, n) == expected
    assert side <= max(roi, k) and side % k == 0
    assert n == 1 or n * side - (n - 1) * overlap >= size  # the tiles cover the image


@pytest.mark.parametrize("bad", [(0, 8, 0, 1), (10, 8, 8, 1), (10, 8, 2, 0)])
def test_fitted_tiles_refuses_bad_arguments(bad):
    with pytest.raises(ValueError):
        fitted_tiles(*bad)


def _pointwise() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(2, 3, kernel_size=1).eval()


@pytest.mark.parametrize("shape", [(64, 64), (1, 200), (45, 45), (130, 300), (257, 520)])
def test_fitted_inferer_matches_the_whole_image_for_a_pointwise_network(shape):
    net = _pointwise()
    x = torch.rand(1, 2, *shape)
    inferer = FittedSlidingWindowInferer(roi_size=128, overlap=0.25, divisible_by=16, sw_batch_size=2)
    with torch.no_grad():
        out = inferer(x, net)
        ref = net(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_fitted_inferer_runs_as_few_tiles_as_the_image_needs():
    calls = []

    def net(x):
        calls.append(tuple(x.shape[2:]))
        return x

    inferer = FittedSlidingWindowInferer(roi_size=128, overlap=0.125, divisible_by=16)
    with torch.no_grad():
        inferer(torch.rand(1, 1, 300, 40), net)
    sides, _, counts = inferer.tiles((300, 40))
    assert counts == [3, 1] and sides == [112, 48]  # ceil((300 + 2*16) / 3) = 111 -> 112; 40 -> 48
    assert calls == [(112, 48)] * 3
    executed = len(calls) * math.prod(calls[0])
    calls.clear()
    with torch.no_grad():  # MONAI's fixed tiles: 128² each, the 40 columns padded to 128
        SlidingWindowInferer(roi_size=128, overlap=0.125, sw_batch_size=1)(torch.rand(1, 1, 300, 40), net)
    assert calls == [(128, 128)] * 3
    assert executed < 0.35 * 3 * 128 * 128


def test_autocast_dtype(monkeypatch):
    assert autocast_dtype("float32", "cpu") is None
    assert autocast_dtype("bfloat16", "cpu") is torch.bfloat16
    assert autocast_dtype("auto", "cuda") is torch.float16
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: False)
    assert autocast_dtype("auto", "cpu") is None
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: True)
    assert autocast_dtype("auto", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="float16"):
        autocast_dtype("float16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype("half", "cpu")


def test_autocast_dtype_for_training_never_picks_float16(monkeypatch):
    monkeypatch.setattr(precision_module, "_cuda_has_bfloat16", lambda device=None: True)
    assert autocast_dtype("auto", "cuda", training=True) is torch.bfloat16
    monkeypatch.setattr(precision_module, "_cuda_has_bfloat16", lambda device=None: False)
    assert autocast_dtype("auto", "cuda", training=True) is None  # float32 on a GPU without bfloat16
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: True)
    assert autocast_dtype("auto", "cpu", training=True) is torch.bfloat16
    assert autocast_dtype("bfloat16", "cuda", training=True) is torch.bfloat16
    with pytest.raises(ValueError, match="loss scaling"):
        autocast_dtype("float16", "cuda", training=True)
    with pytest.raises(ValueError, match="loss scaling"):
        FastInferer(SimpleInferer(), precision="float16", training=True)
    with pytest.raises(ValueError, match="training"):
        FastInferer(SimpleInferer(), precision="bfloat16", cast=True, training=True)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.seen: list[tuple[torch.dtype, bool]] = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append((y.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return {"out": y, "count": torch.tensor(3)}


def test_fast_inferer_float32_is_the_inner_inferer():
    net, ref_net = _Net().eval(), _Net().eval()
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        out = FastInferer(SimpleInferer(), precision="float32", channels_last=True)(x, net)
        ref = SimpleInferer()(x, ref_net)
    torch.testing.assert_close(out["out"], ref["out"], rtol=1e-5, atol=1e-6)
    assert net.seen == [(torch.float32, True)]  # ran channels_last ...
    assert net.conv.weight.is_contiguous() and not net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    # ... and came back in its own layout (a trainer validating with it trains on unchanged)


@pytest.mark.parametrize("scope", ["network", "inferer"])
def test_fast_inferer_bfloat16_returns_float32_close_to_float32(scope):
    net = _Net().eval()
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        ref = SimpleInferer()(x, net)["out"]
        out = FastInferer(SimpleInferer(), precision="bfloat16", scope=scope)(x, net)
    assert net.seen[-1][0] is torch.bfloat16  # the convolution ran in bfloat16
    assert out["out"].dtype is torch.float32 and out["count"].dtype is torch.int64
    torch.testing.assert_close(out["out"], ref, rtol=0.05, atol=0.05)
    assert not torch.equal(out["out"], ref)


def test_fast_inferer_wraps_each_tile_so_blending_is_float32():
    net = _pointwise()
    x = torch.rand(1, 2, 70, 90)
    inner = FittedSlidingWindowInferer(roi_size=32, overlap=0.25, divisible_by=8)
    with torch.no_grad():
        out = FastInferer(inner, precision="bfloat16")(x, net)
        ref = net(x)
    assert out.dtype is torch.float32
    torch.testing.assert_close(out, ref, rtol=0.02, atol=0.02)


def test_fast_inferer_refuses_unknown_options():
    with pytest.raises(ValueError, match="precision"):
        FastInferer(SimpleInferer(), precision="int8")
    with pytest.raises(ValueError, match="scope"):
        FastInferer(SimpleInferer(), scope="everything")


def test_fast_inferer_keeps_a_batched_metatensor_usable():
    from monai.data import MetaTensor
    from monai.data.utils import decollate_batch

    net = _Net().eval()
    x = MetaTensor(torch.rand(2, 3, 8, 8), meta={"id": ["a", "b"]})
    x.is_batch = True
    with torch.no_grad():
        out = FastInferer(SimpleInferer(), precision="float32")(x, net)
    assert net.seen == [(torch.float32, True)]
    assert len(decollate_batch({"image": x, "pred": out["out"]})) == 2


def test_min_tile_pads_only_images_smaller_than_it():
    inferer = FittedSlidingWindowInferer(roi_size=512, overlap=0.125, divisible_by=16, min_tile=32)
    assert inferer.tiles((1, 3))[0] == [32, 32]
    assert inferer.tiles((40, 300))[0] == [48, 304]  # above min_tile: as without it
    assert FittedSlidingWindowInferer(roi_size=512, overlap=0.125, divisible_by=16).tiles((1, 3))[0] == [16, 16]


def test_fast_inferer_cast_runs_bfloat16_weights_and_leaves_the_module_untouched():
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=2, out_channels=3, features=(4, 4, 8, 8, 16, 4)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(1, 2, 48, 40)
    inner = FittedSlidingWindowInferer(roi_size=32, overlap=0.25, divisible_by=16)
    with torch.no_grad():
        ref = inner(x, net)
        bf16_input = net.conv_0.conv_0.conv.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
        seen: list = []
        out = FastInferer(inner, precision="bfloat16", channels_last=False, cast=True)(x, net)
        bf16_input.remove()
    assert seen and all(s == (torch.bfloat16, torch.bfloat16) for s in seen)  # weights and input cast, no autocast
    assert out.dtype is torch.float32
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)
    assert not torch.equal(out, ref)
    for k, v in net.state_dict().items():  # the module's own weights are still float32 and unchanged
        assert v.dtype == before[k].dtype and torch.equal(v, before[k])
    with torch.no_grad():  # float32 ignores cast
        torch.testing.assert_close(FastInferer(inner, precision="float32", cast=True)(x, net), ref)


def test_fast_inferer_cast_needs_the_network_scope():
    with pytest.raises(ValueError, match="cast=True"):
        FastInferer(SimpleInferer(), cast=True, scope="inferer")


@pytest.mark.parametrize("shape", [(1, 2, 64, 64), (3, 2, 50, 37), (1, 1, 1, 90)])
def test_one_tile_skips_the_window_machinery_with_monais_result(shape):
    from monai.data import MetaTensor

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(shape[1], 3, 3, padding=1), torch.nn.ReLU()).eval()
    calls: list = []
    counted = lambda x: calls.append(tuple(x.shape)) or net(x)  # noqa: E731
    x = MetaTensor(torch.rand(*shape), meta={"id": "a"})
    inferer = FittedSlidingWindowInferer(roi_size=96, overlap=0.25, divisible_by=8, sw_batch_size=2)
    sides, _, counts = inferer.tiles(shape[2:])
    assert counts == [1, 1]
    with torch.no_grad():
        out = inferer(x, counted)
        ref = SlidingWindowInferer(roi_size=sides, overlap=0.0, sw_batch_size=2, mode="gaussian")(x, net)
    assert isinstance(out, MetaTensor) and out.meta["id"] == "a" and out.shape == (shape[0], 3, *shape[2:])
    torch.testing.assert_close(out.as_tensor(), ref.as_tensor(), rtol=1e-5, atol=1e-6)  # MONAI, padding included
    assert calls == [(min(2, shape[0] - i), shape[1], *sides) for i in range(0, shape[0], 2)]  # batches of 2


def test_one_tile_falls_back_to_monai_for_outputs_it_cannot_crop():
    net = lambda x: {"a": x * 2, "b": x + 1}  # noqa: E731
    x = torch.rand(1, 1, 20, 30)
    with torch.no_grad():
        out = FittedSlidingWindowInferer(roi_size=64, divisible_by=8)(x, net)
    torch.testing.assert_close(out["a"], x * 2)
    torch.testing.assert_close(out["b"], x + 1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_inferer_trains_in_bfloat16_with_gradients_close_to_float32(channels_last):
    # a trainer's forward pass under the wrapper: the loss sees float32 outputs, gradients reach the float32 weights
    # and match those of a plain float32 pass to bfloat16's precision; the weights keep their own layout
    net, ref_net = _Net().train(), _Net().train()
    x = torch.rand(2, 3, 20, 24)
    target = torch.rand(2, 4, 20, 24)
    out = FastInferer(SimpleInferer(), precision="bfloat16", channels_last=channels_last, training=True)(x, net)
    assert out["out"].dtype == torch.float32 and out["out"].requires_grad
    assert net.seen == [(torch.bfloat16, channels_last)]
    torch.nn.functional.mse_loss(out["out"], target).backward()
    torch.nn.functional.mse_loss(ref_net(x)["out"], target).backward()
    for p, q in zip(net.parameters(), ref_net.parameters(), strict=True):
        assert p.grad is not None and p.grad.dtype == torch.float32
        torch.testing.assert_close(p.grad, q.grad, rtol=0.05, atol=0.02 * float(q.grad.abs().max()))
    assert net.conv.weight.is_contiguous()
    torch.optim.SGD(net.parameters(), lr=0.1).step()  # the optimiser steps the weights in place, as in float32
    assert not torch.equal(net.conv.weight, ref_net.conv.weight)


def test_fast_inferer_leaves_the_layout_of_a_ddp_network_alone(monkeypatch):
    # multi_gpu_train.json wraps the network in DistributedDataParallel: its gradient buckets were laid out for the
    # weights as they were, so the wrapper must not convert them (the input still goes channels_last)
    net = _Net().train()

    class FakeDDP(torch.nn.parallel.DistributedDataParallel):
        def __init__(self, module):  # no process group needed to check the layout logic
            torch.nn.Module.__init__(self)
            self.module = module

        def forward(self, x):
            return self.module(x)

    wrapped = FakeDDP(net)
    out = FastInferer(SimpleInferer(), precision="bfloat16", channels_last=True, training=True)(
        torch.rand(1, 3, 8, 8), wrapped
    )
    assert out["out"].shape == (1, 4, 8, 8) and out["out"].dtype == torch.float32
    assert net.seen == [(torch.bfloat16, True)]
    assert FastInferer(SimpleInferer(), channels_last=True)._prepare(wrapped) is False
    assert net.conv.weight.is_contiguous()


def test_float32_training_is_the_inner_inferer_untouched():
    # train_precision float32 (and auto without native bfloat16): no layout change, no cast, the same numbers
    net, ref_net = _Net().train(), _Net().train()
    x = torch.rand(2, 3, 12, 12)
    out = FastInferer(SimpleInferer(), precision="float32", channels_last=True, training=True)(x, net)
    ref = SimpleInferer()(x, ref_net)
    assert net.seen == [(torch.float32, False)]  # the input was not made channels_last either
    assert torch.equal(out["out"], ref["out"])
