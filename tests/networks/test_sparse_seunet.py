from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.networks.sparse_seunet import (
    InstanceActivationBranch,
    SparseSEUNet,
    aggregate_instance_features,
    coordinate_channels,
)
from cellseg_monai.postprocessing.sparse_instances import sparse_instances_to_labels

HEADS = ("foreground", "border", "background", "overlap")


def test_aggregation_matches_a_hand_made_weighted_mean():
    """Eq. 4.9 on a 1 x 3 image: z_i = sum_x A_i(x) F(x) / sum_x A_i(x)."""
    features = torch.tensor([[[[1.0, 2.0, 4.0]], [[0.0, 10.0, 0.0]]]])  # (1, 2, 1, 3)
    iam = torch.tensor([[[[1.0, 1.0, 0.0]], [[0.0, 0.5, 1.5]]]])  # (1, 2, 1, 3)
    z = aggregate_instance_features(iam, features)
    expected = torch.tensor([[[1.5, 5.0], [(0.5 * 2 + 1.5 * 4) / 2, 0.5 * 10 / 2]]])
    torch.testing.assert_close(z, expected)


def test_coordinate_channels():
    out = coordinate_channels(torch.zeros(2, 1, 3, 5))
    assert out.shape == (2, 3, 3, 5)
    np.testing.assert_allclose(out[0, 1, :, 0].numpy(), [-1, 0, 1])
    np.testing.assert_allclose(out[1, 2, 0].numpy(), [-1, -0.5, 0, 0.5, 1])


@pytest.mark.parametrize("num_instances,kernel_dim,size", [(5, 4, (8, 8)), (12, 8, (6, 10))])
def test_branch_shapes_and_gradients(num_instances, kernel_dim, size):
    torch.manual_seed(0)
    branch = InstanceActivationBranch(6, num_instances, channels=8, kernel_dim=kernel_dim)
    feats = torch.rand(2, 6, *size, requires_grad=True)
    out = branch(feats)
    assert out["logits"].shape == (2, num_instances, 1)
    assert out["objectness"].shape == (2, num_instances, 1)
    assert out["masks"].shape == (2, num_instances, *size)
    assert out["iam"].shape == (2, num_instances, *size) and 0 <= out["iam"].min() and out["iam"].max() <= 1
    (out["masks"].mean() + out["logits"].sum() + out["objectness"].sum()).backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert all(p.grad is not None for p in branch.parameters())
    # focal-loss prior: initial class probability 0.01
    assert torch.sigmoid(branch.cls.bias).item() == pytest.approx(0.01, rel=1e-4)


CASES = [
    # multi_level, instance_level, features, size, predictions per image
    (False, 0, (4, 8, 16), (32, 32), 6),
    (False, 1, (4, 8, 16), (30, 21), 6),
    (True, 0, (4, 8, 16), (32, 32), 12),  # one branch per decoder level (2 levels)
]


@pytest.mark.parametrize("multi_level,instance_level,features,size,m", CASES)
def test_training_outputs_and_gradients(multi_level, instance_level, features, size, m):
    torch.manual_seed(0)
    net = SparseSEUNet(
        3, HEADS, features, se_reduction=2, head_channels=4, num_instances=6, inst_channels=8, kernel_dim=4,
        multi_level=multi_level, instance_level=instance_level,
    )  # fmt: skip
    net.train()
    out = net(torch.rand(2, 3, *size))
    assert out["semantic"].shape == (2, len(HEADS), *size)
    assert out["masks"].shape == (2, m, *size)
    assert out["logits"].shape == (2, m, 1) and out["objectness"].shape == (2, m, 1)
    sum(v.float().mean() for v in out.values()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing


def test_eval_output_is_one_tensor_with_labels_scores_and_probabilities():
    torch.manual_seed(0)
    net = SparseSEUNet(
        1, ("foreground", "border"), (4, 8), head_channels=4, num_instances=4, inst_channels=8, kernel_dim=4,
        instance_level=0, score_threshold=0.0, min_size=1,
    )  # fmt: skip
    # make instance 0 a confident mask of the whole image: huge positive kernel on a constant mask feature
    with torch.no_grad():
        branch = net.branches[0]
        branch.cls.bias.fill_(10.0)
        branch.objectness.bias.fill_(10.0)
        last = branch.mask_convs[-1]
        last.weight.zero_()
        last.bias.fill_(1.0)
        branch.kernel.weight.zero_()
        branch.kernel.bias.fill_(5.0)
    net.eval()
    out = net(torch.rand(2, 1, 10, 13))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4, 10, 13) and out.dtype == torch.float32
    # all four predictions are the same full mask -> NMS keeps one instance covering every pixel
    assert torch.all(out[:, 0] == 1)
    assert torch.all((out[:, 1] > 0.99) & (out[:, 1] <= 1))
    assert torch.all((out[:, 2:] >= 0) & (out[:, 2:] <= 1))


def test_bad_instance_level():
    with pytest.raises(ValueError, match="instance_level"):
        SparseSEUNet(features=(4, 8), instance_level=1)


def _reference_predict(net: SparseSEUNet, x: torch.Tensor) -> torch.Tensor:
    """Eval output from :meth:`SparseSEUNet.forward_train`: every mask upsampled, then decoded (the former predict)."""
    out = net.forward_train(x)
    class_prob = torch.sigmoid(out["logits"][..., 0])
    if net.objectness_score:
        class_prob = torch.sqrt(class_prob * torch.sigmoid(out["objectness"][..., 0]))
    mask_prob = torch.sigmoid(out["masks"])
    channels = []
    for b in range(x.shape[0]):
        labels, scores = sparse_instances_to_labels(
            class_prob[b], mask_prob[b], net.score_threshold, net.mask_threshold, net.nms_threshold, net.min_size
        )
        score_map = torch.cat([scores.new_zeros(1), scores])[labels]
        channels.append(torch.stack([labels.to(x.dtype), score_map.to(x.dtype)]))
    return torch.cat([torch.stack(channels), torch.sigmoid(out["semantic"])], dim=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"score_threshold": 0.0, "min_size": 1},
        {"score_threshold": 0.3, "mask_threshold": 0.5, "min_size": 2},
        {"score_threshold": 0.2, "mask_threshold": 0.7, "objectness_score": True, "min_size": 1},
        {"score_threshold": 0.3, "multi_level": True, "min_size": 1},
    ],
)
def test_predict_upsamples_only_masks_that_can_score_and_matches_the_full_decoding(kwargs):
    torch.manual_seed(0)
    net = SparseSEUNet(3, HEADS, (4, 8, 16), head_channels=4, num_instances=24, inst_channels=8, kernel_dim=4, **kwargs)
    gen = torch.Generator().manual_seed(1)

    def varied(module, args, out):  # an untrained branch predicts near-identical instances: spread them out
        masks = out["masks"]
        blobs = torch.nn.functional.avg_pool2d(torch.randn(masks.shape, generator=gen), 3, 1, 1) * 12 - 1
        return {**out, "logits": torch.randn(out["logits"].shape, generator=gen) * 2, "masks": blobs}

    for branch in net.branches:
        branch.register_forward_hook(varied)
    net.eval()
    x = torch.rand(3, 3, 36, 44)
    with torch.no_grad():
        gen.manual_seed(1)
        expected = _reference_predict(net, x)
        gen.manual_seed(1)
        got = net(x)
    assert torch.equal(got, expected)
    assert expected[:, 0].amax() > 0  # instances were found, so the comparison covers the decoding


def test_watershed_decoder_skips_the_instance_branch_and_keeps_the_semantic_probabilities():
    torch.manual_seed(0)
    kwargs = dict(in_channels=1, heads=("foreground", "border"), features=(4, 8), head_channels=4, num_instances=4,
                  inst_channels=8, kernel_dim=4, instance_level=0, score_threshold=0.0, min_size=1)  # fmt: skip
    sparse = SparseSEUNet(**kwargs).eval()
    watershed = SparseSEUNet(**kwargs, decoder="watershed").eval()
    watershed.load_state_dict(sparse.state_dict())  # same parameters: the flag builds nothing
    calls = []
    watershed.branches[0].register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(2, 1, 10, 13)
    out, ref = watershed(x), sparse(x)
    assert out.shape == ref.shape == (2, 4, 10, 13)
    assert calls == []  # the instance branch never ran
    assert torch.all(out[:, :2] == 0)
    # the semantic channels are the sigmoid of the SE-U-Net's logits, computed independently here
    semantic = torch.sigmoid(watershed.seunet(x))
    torch.testing.assert_close(out[:, 2:], semantic)
    torch.testing.assert_close(out[:, 2:], ref[:, 2:])
    watershed.train()  # training mode still returns the whole set (the sparse branch keeps learning)
    assert set(watershed(x)) == {"semantic", "logits", "objectness", "masks"}


def test_bad_decoder():
    with pytest.raises(ValueError, match="decoder"):
        SparseSEUNet(features=(4, 8), decoder="stardist")
