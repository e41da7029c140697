from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cellseg_monai.losses.impartial import ImPartialLoss, MixtureReconstructionLoss, ScribbleLoss


# ----------------------------------------------------------------------------- independent numpy/math references
def _ref_class_probs(logits: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """(B, M, H, W) logits → (B, K, H, W) class probabilities."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    pi = e / e.sum(axis=1, keepdims=True)
    b = np.cumsum((0,) + classes)
    return np.stack([pi[:, b[k] : b[k + 1]].sum(axis=1) for k in range(len(classes))], axis=1)


def _ref_per_class_ce(probs: np.ndarray, scribble: np.ndarray) -> dict[int, float]:
    """Per-image mean CE of class k on its scribbles, averaged over images that have k; only present classes."""
    out = {}
    for k in range(probs.shape[1]):
        per_image = []
        for i in range(probs.shape[0]):
            sel = scribble[i, 0] == k + 1
            if sel.any():
                per_image.append(float(np.mean(-np.log(probs[i, k][sel]))))
        if per_image:
            out[k] = float(np.mean(per_image))
    return out


def _ref_rec(raw: np.ndarray, image: np.ndarray, mask: np.ndarray, classes, c: int, sigma: float) -> float:
    """Mean over masked pixels of -log Σ_j π_j Π_ch N(x_ch | μ_j,ch, σ²), loops and math only."""
    m = sum(classes)
    b, _, h, w = raw.shape
    vals, weights = [], []
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if mask[i, 0, y, x] == 0:
                    continue
                lg = raw[i, :m, y, x]
                pi = np.exp(lg - lg.max()) / np.exp(lg - lg.max()).sum()
                p = 0.0
                for j in range(m):
                    dens = 1.0
                    for ch in range(c):
                        mu = raw[i, m + j * c + ch, y, x]
                        dens *= math.exp(-((image[i, ch, y, x] - mu) ** 2) / (2 * sigma**2)) / (
                            sigma * math.sqrt(2 * math.pi)
                        )
                    p += pi[j] * dens
                vals.append(-math.log(p))
                weights.append(mask[i, 0, y, x])
    return float(np.average(vals, weights=weights))


# ----------------------------------------------------------------------------- reconstruction (Eq. 1)
def test_reconstruction_hand_computed_1x1x2x2():
    # classes (1, 1): two components; pixel values and parameters chosen by hand
    logits0 = np.array([[0.0, 1.0], [2.0, -1.0]])
    logits1 = np.array([[0.0, 0.0], [0.5, 1.0]])
    mu0 = np.array([[0.1, 0.2], [0.3, 0.4]])
    mu1 = np.array([[0.9, 0.8], [0.7, 0.6]])
    x = np.array([[0.15, 0.75], [0.5, 0.45]])
    mask = np.array([[1.0, 0.0], [1.0, 1.0]])
    sigma = 0.2
    expected = []
    for y, xx in [(0, 0), (1, 0), (1, 1)]:
        p0 = math.exp(logits0[y, xx]) / (math.exp(logits0[y, xx]) + math.exp(logits1[y, xx]))
        n0 = math.exp(-((x[y, xx] - mu0[y, xx]) ** 2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
        n1 = math.exp(-((x[y, xx] - mu1[y, xx]) ** 2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
        expected.append(-math.log(p0 * n0 + (1 - p0) * n1))

    raw = torch.tensor(np.stack([logits0, logits1, mu0, mu1])[None], dtype=torch.float64)
    img = torch.tensor(x[None, None])
    msk = torch.tensor(mask[None, None])
    loss = MixtureReconstructionLoss(classes=(1, 1), in_channels=1, sigma=sigma)
    assert loss(raw, img, msk).item() == pytest.approx(np.mean(expected), rel=1e-9)
    loss_sum = MixtureReconstructionLoss(classes=(1, 1), sigma=sigma, reduction="sum")
    assert loss_sum(raw, img, msk).item() == pytest.approx(np.sum(expected), rel=1e-9)
    none = MixtureReconstructionLoss(classes=(1, 1), sigma=sigma, reduction="none")(raw, img, msk)
    assert none.shape == (1, 1, 2, 2)
    assert none[0, 0, 0, 1].item() == 0.0
    assert none[0, 0, 1, 1].item() == pytest.approx(expected[2], rel=1e-9)


@pytest.mark.parametrize("classes,c,sigma", [((2, 1), 2, 0.1), ((1, 2, 2), 3, 0.3), ((2, 2), 1, 0.05)])
def test_reconstruction_random_multichannel(classes, c, sigma):
    rng = np.random.default_rng(0)
    m = sum(classes)
    raw = rng.normal(size=(2, m + m * c, 3, 4))
    raw[:, m:] = rng.uniform(0, 1, size=(2, m * c, 3, 4))
    image = rng.uniform(0, 1, size=(2, c, 3, 4))
    mask = (rng.uniform(size=(2, 1, 3, 4)) < 0.5).astype(float)
    mask[0, 0, 0, 0] = 1.0
    loss = MixtureReconstructionLoss(classes=classes, in_channels=c, sigma=sigma)
    got = loss(torch.tensor(raw), torch.tensor(image), torch.tensor(mask).bool()).item()
    assert got == pytest.approx(_ref_rec(raw, image, mask, classes, c, sigma), rel=1e-9)


def test_reconstruction_is_stable_far_from_means():
    # naive exp(-0.5 (1/0.01)^2) underflows; equal components reduce to a single Gaussian: closed form
    sigma, x, mu = 0.01, 1.0, 0.0
    raw = torch.tensor([[0.0, 0.0, mu, mu]]).reshape(1, 4, 1, 1).requires_grad_()
    loss = MixtureReconstructionLoss(classes=(1, 1), sigma=sigma)(
        raw, torch.full((1, 1, 1, 1), x), torch.ones(1, 1, 1, 1)
    )
    expected = 0.5 * ((x - mu) / sigma) ** 2 + math.log(sigma * math.sqrt(2 * math.pi))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(raw.grad).all()


def test_reconstruction_empty_mask_is_zero_with_grad():
    raw = torch.randn(1, 4, 2, 2, requires_grad=True)
    loss = MixtureReconstructionLoss(classes=(1, 1))(raw, torch.rand(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(raw.grad, torch.zeros_like(raw))


def test_reconstruction_bad_shapes_raise():
    loss = MixtureReconstructionLoss(classes=(1, 1), in_channels=1)
    with pytest.raises(ValueError, match="channels"):
        loss(torch.randn(1, 5, 2, 2), torch.rand(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="mask"):
        loss(torch.randn(1, 4, 2, 2), torch.rand(1, 1, 2, 2), torch.ones(1, 2, 2, 2))
    with pytest.raises(ValueError):
        MixtureReconstructionLoss(sigma=0.0)
    with pytest.raises(ValueError):
        MixtureReconstructionLoss(reduction="max")


# ----------------------------------------------------------------------------- scribbles (Eq. 2)
SCRIBBLE_CASES = [
    # classes, scribble (B, 1, H, W) as nested lists
    ((1, 1), [[[[1, 0, 2], [0, 1, 1]]]]),
    ((2, 1), [[[[1, 1, 0], [0, 0, 2]]], [[[0, 0, 0], [1, 0, 0]]]]),
    ((2, 2, 1), [[[[3, 3, 0], [0, 1, 2]]], [[[2, 0, 0], [0, 0, 2]]]]),
    ((1, 2, 1), [[[[0, 0, 0], [0, 0, 3]]], [[[0, 3, 0], [0, 0, 0]]]]),  # only one class present
]


@pytest.mark.parametrize("classes,scribble", SCRIBBLE_CASES)
def test_scribble_loss_hand_computed(classes, scribble):
    scr = np.array(scribble)
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(scr.shape[0], sum(classes), 2, 3))
    per_class = _ref_per_class_ce(_ref_class_probs(logits, classes), scr)
    expected = np.mean(list(per_class.values()))
    loss = ScribbleLoss(classes=classes)(torch.tensor(logits), torch.tensor(scr))
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    none = ScribbleLoss(classes=classes, reduction="none")(torch.tensor(logits), torch.tensor(scr))
    assert none.shape == (len(classes),)
    for k in range(len(classes)):
        assert none[k].item() == pytest.approx(per_class.get(k, 0.0), rel=1e-9, abs=1e-12)


def test_scribble_loss_balances_classes():
    # one background pixel vs three foreground pixels: each class weighs 1/2, not 1/4 vs 3/4
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0, 0] = math.log(3.0)  # P(bg)=3/4 at pixel 0
    scr = torch.tensor([[[[1, 2, 2, 2]]]])
    expected = 0.5 * (-math.log(0.75)) + 0.5 * (-math.log(0.5))
    assert ScribbleLoss(classes=(1, 1))(logits, scr).item() == pytest.approx(expected, rel=1e-6)


def test_scribble_loss_without_scribbles_is_zero_with_grad():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = ScribbleLoss(classes=(2, 2))(logits, torch.zeros(2, 1, 3, 3, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("bad", [torch.full((1, 1, 2, 2), 3), torch.full((1, 1, 2, 2), -1), torch.ones(1, 2, 2, 2)])
def test_scribble_loss_bad_target_raises(bad):
    with pytest.raises(ValueError, match="scribble"):
        ScribbleLoss(classes=(1, 1))(torch.randn(1, 2, 2, 2), bad)


# ----------------------------------------------------------------------------- joint (Eq. 3)
@pytest.mark.parametrize(
    "classes,c,weights",
    [
        ((2, 2), 1, None),
        ((2, 1, 2), 2, {"rec": 0.5, "seg_fore": 0.3}),
        ((1, 2), 3, {"seg_back": 0.0, "seg_fore": 1.0, "rec": 0.0}),
    ],
)
def test_joint_loss_is_weighted_sum(classes, c, weights):
    rng = np.random.default_rng(7)
    m, k = sum(classes), len(classes)
    raw = rng.normal(size=(2, m + m * c, 4, 4))
    image = rng.uniform(size=(2, c, 4, 4))
    mask = np.zeros((2, 1, 4, 4))
    mask[0, 0, 1, 2] = mask[1, 0, 3, 0] = mask[1, 0, 0, 0] = 1
    scribble = rng.integers(0, k + 1, size=(2, 1, 4, 4))
    scribble[1] = 0
    scribble[0, 0, 0, :k] = np.arange(1, k + 1)  # every class present

    per_class = _ref_per_class_ce(_ref_class_probs(raw[:, :m], classes), scribble)
    fore = np.mean([per_class[j] for j in range(1, k)])
    back = per_class[0]
    rec = _ref_rec(raw, image, mask, classes, c, 0.1)
    w = {"seg_fore": 0.45, "seg_back": 0.45, "rec": 0.1}
    w.update(weights or {})
    expected = w["seg_fore"] * fore + w["seg_back"] * back + w["rec"] * rec

    loss_fn = ImPartialLoss(classes=classes, in_channels=c, weights=weights)
    raw_t = torch.tensor(raw, requires_grad=True)
    target = {"image": torch.tensor(image), "blind_mask": torch.tensor(mask), "scribble": torch.tensor(scribble)}
    loss = loss_fn(raw_t, target)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert loss_fn.last_terms["seg_fore"] == pytest.approx(fore, rel=1e-9)
    assert loss_fn.last_terms["seg_back"] == pytest.approx(back, rel=1e-9)
    assert loss_fn.last_terms["rec"] == pytest.approx(rec, rel=1e-9)
    assert loss_fn.last_terms["total"] == pytest.approx(expected, rel=1e-9)
    loss.backward()
    assert torch.isfinite(raw_t.grad).all()


def test_joint_loss_default_weights_and_errors():
    assert ImPartialLoss().weights == {"seg_fore": 0.45, "seg_back": 0.45, "rec": 0.1}
    assert sum(ImPartialLoss().weights.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown"):
        ImPartialLoss(weights={"reg": 0.1})
    with pytest.raises(ValueError, match=">= 0"):
        ImPartialLoss(weights={"rec": -1.0})
    with pytest.raises(ValueError, match="lacks"):
        ImPartialLoss()(torch.randn(1, 8, 2, 2), {"image": torch.rand(1, 1, 2, 2)})
