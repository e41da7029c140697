from __future__ import annotations

import pytest
import torch

from cellseg_monai.networks.mask_rcnn.decomposed_attention import DecomposedSelfAttention


def _reference(block: DecomposedSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """E = rho_q(Q)^T (rho_k(K) V^T) written with explicit einsums, per location."""
    q = torch.einsum("oc,bchw->bohw", block.query.weight[:, :, 0, 0], x) + block.query.bias[None, :, None, None]
    k = torch.einsum("oc,bchw->bohw", block.key.weight[:, :, 0, 0], x) + block.key.bias[None, :, None, None]
    v = torch.einsum("oc,bchw->bohw", block.value.weight[:, :, 0, 0], x) + block.value.bias[None, :, None, None]
    b, d, h, w = q.shape
    rq = torch.exp(q) / torch.exp(q).sum(dim=1, keepdim=True)  # softmax over channels at each location
    ek = torch.exp(k.reshape(b, d, -1))
    rk = ek / ek.sum(dim=2, keepdim=True)  # softmax over locations for each channel
    g = torch.einsum("bdn,bvn->bdv", rk, v.reshape(b, v.shape[1], -1))
    return torch.einsum("bdv,bdn->bvn", g, rq.reshape(b, d, -1)).reshape(b, -1, h, w)


@pytest.mark.parametrize("shape, basis, value", [((2, 8, 5, 7), 4, 6), ((1, 16, 8, 8), 64, 64)])
def test_matches_formula_and_shape(shape, basis, value):
    torch.manual_seed(0)
    block = DecomposedSelfAttention(shape[1], basis, value, zero_init=False)
    x = torch.randn(shape)
    torch.testing.assert_close(block.attention(x), _reference(block, x), rtol=1e-4, atol=1e-5)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()
    assert block.query.weight.grad is not None and block.key.weight.grad.abs().sum() > 0


def test_identity_at_init_and_rows_are_convex_combinations():
    x = torch.randn(1, 8, 6, 6)
    block = DecomposedSelfAttention(8, 4, 4)
    torch.testing.assert_close(block(x), x)  # zero-initialised output projection
    # each output is a convex combination of the values: within [min, max] of the value map per channel
    att = block.attention(x)
    v = block.value(x).flatten(2)
    assert (att.flatten(2) <= v.max(dim=2, keepdim=True).values + 1e-5).all()
    assert (att.flatten(2) >= v.min(dim=2, keepdim=True).values - 1e-5).all()


def test_bad_input():
    with pytest.raises(ValueError):
        DecomposedSelfAttention(4)(torch.randn(4, 8, 8))
