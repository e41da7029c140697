from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cellseg_monai.networks.canonical_shape import (
    CanonicalShapeNet,
    DilatedResNet,
    box_pixels,
    instance_boxes,
    render_instances,
    render_points,
    shape_support_radius,
)
from cellseg_monai.networks.canonical_shape.implicit_shape import ImplicitShapeMLP

STRIDE = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one intra-op thread is faster than contending for the shared CPU cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class AnalyticDisc(nn.Module):
    """Fixed canonical shape: log p(s) of a hard-edged disc r <= radius (independent of the MLP)."""

    def __init__(self, radius: float = 0.5, sharpness: float = 200.0):
        super().__init__()
        self.radius, self.sharpness = radius, sharpness

    def forward(self, coords):
        r = torch.linalg.vector_norm(coords, dim=-1)
        return torch.nn.functional.logsigmoid(-self.sharpness * (r - self.radius))


def _disc_mlp(radius: float = 0.5, k: float = 200.0) -> ImplicitShapeMLP:
    """The paper's MLP with weights set so that its canonical shape is the disc r <= radius."""
    mlp = ImplicitShapeMLP(init_radius=None)
    with torch.no_grad():
        for p in mlp.parameters():
            p.zero_()
        mlp.fc3.weight[0, -1] = k  # weight on the concatenated r
        mlp.fc3.bias.fill_(-k * radius)
    return mlp


def _params(L, centre, t=(0.0, 0.0), presence=1.0, image_size=(128, 128)):
    f = torch.float64
    return {
        "L": torch.as_tensor(L, dtype=f).reshape(1, -1, 2, 2),
        "centre": torch.as_tensor(centre, dtype=f).reshape(1, -1, 2),
        "t": torch.as_tensor(t, dtype=f).reshape(1, -1, 2),
        "presence": torch.as_tensor(presence, dtype=f).reshape(1, -1),
        "image_size": torch.tensor([image_size], dtype=f),
    }


def _reference_mask(L, pos, size, image_size=(128, 128), radius=0.5):
    """Analytic: pixel centres X (input pixels) with |L^-1 (X - pos)| <= radius, via numpy.linalg.solve."""
    h, w = size
    ys = (np.arange(h) + 0.5) * image_size[0] / h
    xs = (np.arange(w) + 0.5) * image_size[1] / w
    gx, gy = np.meshgrid(xs, ys)
    d = np.stack([gx - pos[0], gy - pos[1]], 0).reshape(2, -1)
    xc = np.linalg.solve(np.asarray(L, dtype=float), d)
    return (np.hypot(xc[0], xc[1]) <= radius).reshape(h, w)


def _iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


ELLIPSE_CASES = [
    # L (pixels per canonical unit), centre, t, output size
    (STRIDE * np.diag([2.0, 1.0]), (64.0, 64.0), (0.0, 0.0), (128, 128)),
    (STRIDE * np.diag([2.0, 1.0]), (56.0, 72.0), (5.5, -3.0), (32, 32)),  # training grid: 1/4 resolution
    (STRIDE * np.diag([1.0, 2.0]), (64.0, 64.0), (0.0, 0.0), (128, 128)),
    (STRIDE * np.array([[1.0, 0.0], [1.0, 1.5]]), (60.0, 64.0), (0.0, 0.0), (96, 96)),  # sheared / rotated
]


@pytest.mark.parametrize("shape_kind", ["analytic", "mlp"])
@pytest.mark.parametrize("L,centre,t,size", ELLIPSE_CASES)
def test_rendering_known_affine_gives_ellipse(shape_kind, L, centre, t, size):
    shape = AnalyticDisc() if shape_kind == "analytic" else _disc_mlp().double()
    masks = render_instances(shape, _params(L, centre, t), size)
    assert masks.shape == (1, 1) + size
    rendered = masks[0, 0].detach().numpy() > 0.5
    pos = (centre[0] + t[0], centre[1] + t[1])
    expected = _reference_mask(L, pos, size)
    assert expected.sum() > 20
    assert _iou(rendered, expected) > 0.95
    # negative control: the ellipse with x and y swapped is clearly different, so the check can fail
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert _iou(rendered, _reference_mask(swap @ np.asarray(L), pos, size)) < 0.8


def test_axis_convention_x_is_columns():
    # L = 16 diag(2, 1): canonical disc r <= 0.5 -> semi-axes 16 px along x (columns) and 8 px along y (rows)
    m = render_instances(AnalyticDisc(), _params(STRIDE * np.diag([2.0, 1.0]), (64.0, 64.0)), (128, 128))[0, 0] > 0.5
    rows, cols = np.nonzero(m.detach().numpy())
    assert cols.max() - cols.min() + 1 == 32 and rows.max() - rows.min() + 1 == 16


def test_presence_scales_and_max_combines():
    net = CanonicalShapeNet(features=4, shape=AnalyticDisc())
    L = np.stack([STRIDE * np.eye(2)] * 2)
    params = _params(L, [(32.0, 32.0), (44.0, 32.0)], [(0.0, 0.0)] * 2, [0.8, 0.3], (64, 64))
    combined = net.render(params, (64, 64))[0, 0].detach().numpy()
    assert combined.shape == (64, 64)
    # hand reference: disc 1 (radius 8 px at x=32) has 0.8, disc 2 only (x in (40, 52)) has 0.3, outside 0
    assert combined[32, 32] == pytest.approx(0.8, abs=1e-6)
    assert combined[32, 38] == pytest.approx(0.8, abs=1e-6)  # overlap: max(0.8, 0.3)
    assert combined[32, 48] == pytest.approx(0.3, abs=1e-6)
    assert combined[32, 60] == pytest.approx(0.0, abs=1e-6) and combined[5, 5] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("depth,features", [("resnet10", 8), ("resnet18", 4), ("resnet50", 2)])
def test_feature_map_is_8x8_for_128px(depth, features):
    enc = DilatedResNet(in_channels=3, depth=depth, features=features).eval()
    with torch.no_grad():
        f = enc(torch.rand(1, 3, 128, 128))
    assert f.shape == (1, enc.out_channels, 128 // 16, 128 // 16) == (1, enc.out_channels, 8, 8)
    convs = [m for m in enc.stages[3].modules() if isinstance(m, nn.Conv2d)]
    assert all(m.stride == (1, 1) for m in convs)  # the last stage's stride is gone ...
    if depth != "resnet10":  # ... and, torchvision-style, the blocks after the first one are dilated
        assert (2, 2) in {m.dilation for m in convs}


def test_parameters_shapes_layout_and_constraints():
    torch.manual_seed(0)
    net = CanonicalShapeNet(in_channels=2, features=4).eval()
    with torch.no_grad():
        net.affine_head.weight.normal_(0, 5.0)  # push the raw outputs to extremes
        net.affine_head.bias.normal_(0, 20.0)
        params = net.predict_parameters(torch.randn(2, 2, 128, 128))
    n = 2 * 8 * 8
    assert n == 128
    assert params["L"].shape == (2, n, 2, 2) and params["t"].shape == (2, n, 2) and params["presence"].shape == (2, n)
    L = params["L"]
    assert (L[..., 0, 0] > 0).all() and (L[..., 1, 1] > 0).all()
    assert (L[..., 0, 1] == 0).all()
    assert (params["t"].abs() <= 1.0 * STRIDE + 1e-4).all()
    assert ((params["presence"] > 0) & (params["presence"] < 1)).all()
    assert torch.equal(params["image_size"][0], torch.tensor([128.0, 128.0]))
    # instance n = (row * 8 + col) * 2 + a sits at cell (row, col), centre ((col + .5) 16, (row + .5) 16) = (x, y)
    for n_idx, (row, col) in [(0, (0, 0)), (1, (0, 0)), (2, (0, 1)), (17, (1, 0)), (127, (7, 7))]:
        expected = torch.tensor([(col + 0.5) * 16, (row + 0.5) * 16])
        assert torch.allclose(params["centre"][1, n_idx], expected)


def test_initial_placement_is_disc_at_cell_centre():
    net = CanonicalShapeNet(features=4)
    with torch.no_grad():
        net.affine_head.weight.zero_()
        net.presence_head.weight.zero_()
        params = net.predict_parameters(torch.rand(1, 1, 64, 64))
    assert torch.allclose(params["L"][0, 0], torch.eye(2) * STRIDE / 2)
    assert torch.allclose(params["t"], torch.zeros_like(params["t"]))
    assert torch.allclose(params["presence"], torch.full_like(params["presence"], 0.1))


@pytest.mark.parametrize("scale,size,expected", [(1.0, (64, 48), (64, 48)), (0.25, (64, 64), (16, 16))])
def test_forward_single_tensor_and_render_scale(scale, size, expected):
    net = CanonicalShapeNet(in_channels=1, features=4, render_scale=scale)
    y = net(torch.rand(2, 1, *size))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 1) + expected
    assert ((y >= 0) & (y <= 1)).all()
    out = net.predict_instances(torch.rand(1, 1, *size), size=(20, 24))
    assert out["masks"].shape == (1, 2 * ((size[0] + 15) // 16) * ((size[1] + 15) // 16), 20, 24)
    assert torch.equal(out["combined"][:, 0], out["masks"].amax(1))


def test_gradients_reach_mlp_and_encoder():
    torch.manual_seed(0)
    net = CanonicalShapeNet(in_channels=1, features=4, render_scale=0.25)
    y = net(torch.rand(2, 1, 64, 64))
    target = torch.zeros_like(y)
    target[..., 4:10, 4:10] = 1
    torch.nn.functional.binary_cross_entropy(y.clamp(1e-6, 1 - 1e-6), target).backward()
    for name in ("shape.fc1.weight", "shape.fc2.weight", "shape.fc3.weight", "encoder.stem.0.weight"):
        g = dict(net.named_parameters())[name].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    assert net.affine_head.weight.grad.abs().sum() > 0 and net.presence_head.weight.grad.abs().sum() > 0


def test_canonical_shape_image():
    net = CanonicalShapeNet(features=4, shape=_disc_mlp(radius=0.5))
    img = net.canonical_shape(size=40, extent=1.0).detach().numpy()
    c = (np.arange(40) + 0.5) / 40 * 2 - 1
    gx, gy = np.meshgrid(c, c)
    assert img.shape == (40, 40)
    assert _iou(img > 0.5, np.hypot(gx, gy) <= 0.5) > 0.95


class _NoAttrs(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        ({"backbone": "resnet7"}, ValueError),
        ({"instances_per_cell": 0}, ValueError),
        ({"presence_prior": 1.0}, ValueError),
        ({"encoder": _NoAttrs()}, TypeError),
    ],
)
def test_constructor_errors(kwargs, exc):
    with pytest.raises(exc):
        CanonicalShapeNet(**kwargs)


def test_bad_input_errors():
    net = CanonicalShapeNet(features=4)
    with pytest.raises(ValueError, match="B, C, H, W"):
        net.predict_parameters(torch.rand(1, 64, 64))
    with pytest.raises(ValueError, match="size"):
        net.render(net.predict_parameters(torch.rand(1, 1, 32, 32)), (0, 8))
    with pytest.raises(ValueError, match="presence"):
        net.render({"L": torch.eye(2).expand(1, 1, 2, 2)}, (8, 8))


def test_dict_in_training_gives_presence_to_the_loss_and_one_tensor_in_eval():
    net = CanonicalShapeNet(in_channels=1, features=8, render_scale=0.25, dict_in_training=True)
    x = torch.rand(2, 1, 64, 64)
    out = net.train()(x)
    assert set(out) == {"combined", "presence"} and out["combined"].shape == (2, 1, 16, 16)
    assert out["presence"].shape == (2, 2 * 4 * 4)
    params = net.predict_parameters(x)  # same weights, same input: the same presence (batch norm in train mode)
    torch.testing.assert_close(out["presence"], params["presence"])
    assert isinstance(net.eval()(x), torch.Tensor)


def test_chunked_rendering_without_gradients_equals_the_full_maximum():
    net = CanonicalShapeNet(in_channels=1, features=4).eval()
    x = torch.rand(2, 1, 64, 80)
    params = net.predict_parameters(x)
    full = net.render_instances(params, (64, 80)).amax(1, keepdim=True)  # (instances, pixels) all at once
    net.render_chunk_points = 3 * 64 * 80 * 2  # 3 instances per chunk
    with torch.no_grad():
        chunked = net.render(params, (64, 80))
    torch.testing.assert_close(chunked, full.detach())


def _random_params(b: int = 2, n: int = 6, hw: tuple[int, int] = (40, 56), seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    L = torch.zeros(b, n, 2, 2)
    L[..., 0, 0] = 2.0 + 6.0 * torch.rand(b, n, generator=g)
    L[..., 1, 1] = 2.0 + 6.0 * torch.rand(b, n, generator=g)
    L[..., 1, 0] = 4.0 * torch.rand(b, n, generator=g) - 2.0
    centre = torch.rand(b, n, 2, generator=g) * torch.tensor([hw[1], hw[0]], dtype=torch.float32)
    return {
        "L": L,
        "t": torch.randn(b, n, 2, generator=g),
        "centre": centre,
        "presence": 0.5 + 0.5 * torch.rand(b, n, generator=g),
        "image_size": torch.tensor([float(hw[0]), float(hw[1])]).expand(b, 2),
    }


def test_box_pixels_against_a_loop():
    boxes = torch.tensor([[0, 0, 2, 3], [5, 5, 5, 9], [1, 4, 4, 6], [3, 3, 2, 8]])  # the 2nd and 4th are empty
    index, rows, cols = box_pixels(boxes)
    expected = [
        (i, r, c) for i, (y0, x0, y1, x1) in enumerate(boxes.tolist()) for r in range(y0, y1) for c in range(x0, x1)
    ]
    assert list(zip(index.tolist(), rows.tolist(), cols.tolist(), strict=True)) == expected


@pytest.mark.parametrize("size", [(40, 56), (20, 28), (80, 112)])  # full, half and double resolution
def test_render_points_on_boxes_equals_the_full_rendering(size):
    params = _random_params()
    shape = ImplicitShapeMLP()  # initial shape: a soft disc of radius 1
    full = render_instances(shape, params, size)  # (B, N, H', W')
    radius = shape_support_radius(shape, 0.5)
    assert radius == pytest.approx(1.0, abs=0.02)
    boxes = instance_boxes(params, radius, size)  # (B, N, 4)
    index, rows, cols = box_pixels(boxes.reshape(-1, 4))
    with torch.no_grad():
        values = render_points(shape, params, index, rows, cols, size)
    n = params["L"].shape[1]
    expected = full.reshape(-1, *size)[index, rows, cols]
    torch.testing.assert_close(values, expected, rtol=1e-6, atol=1e-7)
    # every pixel above 0.5 lies in its instance's box
    inside = torch.zeros_like(full, dtype=torch.bool).reshape(-1, *size)
    inside[index, rows, cols] = True
    assert not ((full.reshape(-1, *size) > 0.5) & ~inside).any()
    assert boxes.shape == (2, n, 4) and inside.sum() < 0.5 * inside.numel()  # the boxes are much smaller than the grid


def test_support_radius_of_an_analytic_disc_and_of_an_empty_shape():
    assert shape_support_radius(AnalyticDisc(radius=2.5), 0.5) == pytest.approx(2.5, abs=0.02)
    assert shape_support_radius(AnalyticDisc(radius=2.5, sharpness=1.0), 0.95) == 0.0  # max p(s) = sigmoid(2.5) < 0.95
