from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.networks.impartial_unet import ImPartialUNet
from cellseg_monai.transforms.mixture import MixtureToProbabilities, MixtureToProbabilitiesd


def _ref_class_probs(logits: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """(M, H, W) logits → (K, H, W): softmax over components, summed per class (independent numpy)."""
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    pi = e / e.sum(axis=0, keepdims=True)
    b = np.cumsum((0,) + classes)
    return np.stack([pi[b[k] : b[k + 1]].sum(axis=0) for k in range(len(classes))])


@pytest.mark.parametrize("classes,c", [((2, 2), 1), ((2, 2, 2), 3), ((1, 3), 2)])
def test_matches_reference_and_sums_to_one(classes, c):
    m = sum(classes)
    raw = np.random.default_rng(0).normal(scale=3.0, size=(m + m * c, 5, 6)).astype(np.float32)
    prob = MixtureToProbabilities(classes=classes, in_channels=c)(raw)
    assert prob.shape == (len(classes), 5, 6)
    np.testing.assert_allclose(prob.numpy(), _ref_class_probs(raw[:m].astype(np.float64), classes), atol=1e-6)
    np.testing.assert_allclose(prob.sum(0).numpy(), np.ones((5, 6)), atol=1e-6)


@pytest.mark.parametrize("classes,c", [((2, 2), 1), ((2, 2, 2), 3)])
def test_matches_network_probabilities_output(classes, c):
    torch.manual_seed(0)
    raw_net = ImPartialUNet(in_channels=c, classes=classes, features=4, depth=1)
    prob_net = ImPartialUNet(in_channels=c, classes=classes, features=4, depth=1, output="probabilities")
    prob_net.load_state_dict(raw_net.state_dict())
    x = torch.rand(1, c, 8, 8)
    with torch.no_grad():
        raw, prob = raw_net(x), prob_net(x)
    d = MixtureToProbabilitiesd(keys="pred", output_key="prob", fg_key="fg_prob", classes=classes, in_channels=c)(
        {"pred": raw[0]}
    )
    torch.testing.assert_close(d["prob"], prob[0])
    assert d["fg_prob"].shape == (1, 8, 8)
    fg_ref = _ref_class_probs(raw[0, : sum(classes)].double().numpy(), classes)[1:].sum(0, keepdims=True)
    np.testing.assert_allclose(d["fg_prob"].numpy(), fg_ref, atol=1e-6)
    assert torch.equal(d["pred"], raw[0])


def test_wrong_channel_count_raises():
    with pytest.raises(ValueError, match="expected raw"):
        MixtureToProbabilities(classes=(2, 2), in_channels=1)(torch.zeros(7, 4, 4))
    with pytest.raises(ValueError, match="expected raw"):
        MixtureToProbabilities(classes=(2, 2), in_channels=1)(torch.zeros(1, 8, 4, 4))


def test_foreground_probability_stays_in_unit_range_for_confident_background():
    # a very confident background gives P(bg) = 1 + ulp in float32; 1 - P(bg) must not go negative
    from cellseg_monai.transforms.mixture import MixtureToProbabilitiesd

    raw = torch.zeros(4 + 4, 64, 64)
    raw[0] = 30.0  # background component logit far above the others
    raw[1] = torch.linspace(-5, 40, 64 * 64).reshape(64, 64)
    out = MixtureToProbabilitiesd(classes=(2, 2), in_channels=1)({"pred": raw})
    assert float(out["fg_prob"].min()) >= 0.0 and float(out["fg_prob"].max()) <= 1.0


@pytest.mark.parametrize("block_pixels", [1, 13, 1 << 16])
def test_row_blocks_give_the_whole_image_result_and_keep_metadata(block_pixels):
    from monai.data import MetaTensor

    classes, m = (2, 2), 4
    raw = np.random.default_rng(1).normal(scale=3.0, size=(2 * m, 11, 7)).astype(np.float32)
    meta = MetaTensor(torch.from_numpy(raw), meta={"filename_or_obj": "a.tif"})
    prob = MixtureToProbabilities(classes=classes, block_pixels=block_pixels)(meta)
    assert isinstance(prob, MetaTensor) and prob.meta["filename_or_obj"] == "a.tif"
    assert prob.shape == (2, 11, 7) and prob.dtype == torch.float32
    np.testing.assert_allclose(prob.numpy(), _ref_class_probs(raw[:m].astype(np.float64), classes), atol=1e-6)
