"""The GDN torch reference against the per-token recurrence, and the norms against transformers'."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_model_util import hybrid_config
from transformers.models.olmo3.modeling_olmo3 import Olmo3RMSNorm
from transformers.models.olmo_hybrid.modeling_olmo_hybrid import OlmoHybridRMSNormGated

from longctx.model.gdn import GatedDeltaNet, causal_conv_ref, chunk_delta_rule_ref, gated_delta_rule_ref
from longctx.model.norms import GatedRMSNorm, RMSNorm
from longctx.model.varlen import doc_layout


def recurrence(q, k, v, g, beta):
    """Token by token, straight from the definition: [B, H, T, *] inputs, S starts at 0."""
    B, H, T, K = k.shape
    S = torch.zeros(B, H, K, v.shape[-1], dtype=torch.float64)
    out = []
    for t in range(T):
        S = S * g[:, :, t].exp()[..., None, None]
        u = beta[:, :, t, None] * (v[:, :, t] - torch.einsum("bhkv,bhk->bhv", S, k[:, :, t]))
        S = S + torch.einsum("bhk,bhv->bhkv", k[:, :, t], u)
        out.append(torch.einsum("bhkv,bhk->bhv", S, q[:, :, t]))
    return torch.stack(out, 2)


def gdn_inputs(B=2, T=37, H=3, K=8, V=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = (F.normalize(torch.randn(B, H, T, K, generator=gen, dtype=torch.float64), dim=-1) for _ in range(2))
    v = torch.randn(B, H, T, V, generator=gen, dtype=torch.float64)
    g = -0.3 * torch.rand(B, H, T, generator=gen, dtype=torch.float64)
    beta = 2 * torch.rand(B, H, T, generator=gen, dtype=torch.float64)  # allow_neg_eigval range
    return q, k, v, g, beta


@pytest.mark.parametrize("chunk", [4, 16, 64])
def test_chunked_form_equals_recurrence(chunk):
    inputs = gdn_inputs()
    assert torch.allclose(chunk_delta_rule_ref(*inputs, chunk=chunk), recurrence(*inputs), atol=1e-10)


def test_packed_reference_restarts_state_per_document():
    B, T, HK, HV, K, V = 2, 20, 2, 4, 8, 6
    gen = torch.Generator().manual_seed(1)
    q, k = (torch.randn(B, T, HK, K, generator=gen) for _ in range(2))
    v = torch.randn(B, T, HV, V, generator=gen)
    g, beta = -0.2 * torch.rand(B, T, HV, generator=gen), torch.rand(B, T, HV, generator=gen)
    bounds = [0, 7, 20, 21, 40]
    layout = doc_layout(torch.tensor(bounds, dtype=torch.int32), B, T, torch.device("cpu"))
    out = gated_delta_rule_ref(q, k, v, g, beta, K**-0.5, layout).reshape(B * T, HV, V)
    flat = [x.reshape(1, B * T, *x.shape[2:]) for x in (q, k, v, g, beta)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        qd, kd, vd, gd, bd = (x[:, a:b] for x in flat)
        # key head i serves value heads 2i, 2i+1
        qd, kd = (F.normalize(x.repeat_interleave(HV // HK, dim=2).double(), dim=-1, eps=0) for x in (qd, kd))
        ref = recurrence(*(x.transpose(1, 2) for x in (qd * K**-0.5, kd, vd.double(), gd.double(), bd.double())))
        assert torch.allclose(out[a:b], ref.transpose(1, 2)[0].float(), atol=1e-5), (a, b)


def test_causal_conv_cut_at_documents():
    B, T, C, W = 2, 12, 5, 4
    gen = torch.Generator().manual_seed(2)
    x, weight = torch.randn(B, T, C, generator=gen), torch.randn(C, 1, W, generator=gen)
    bounds = [0, 3, 12, 13, 24]
    layout = doc_layout(torch.tensor(bounds, dtype=torch.int32), B, T, torch.device("cpu"))
    out = causal_conv_ref(x, weight, layout.doc_pos).reshape(B * T, C)
    flat = x.reshape(B * T, C)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        alone = F.conv1d(flat[a:b].T[None], weight, padding=W - 1, groups=C)[0, :, : b - a].T
        assert torch.allclose(out[a:b], F.silu(alone), atol=1e-6)
    unpacked = F.silu(F.conv1d(x.transpose(1, 2), weight, padding=W - 1, groups=C)[..., :T].transpose(1, 2))
    assert torch.allclose(causal_conv_ref(x, weight, None), unpacked, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norms_match_transformers_bitwise(dtype):
    gen = torch.Generator().manual_seed(4)
    x, gate = torch.randn(3, 7, 24, generator=gen).to(dtype), torch.randn(3, 7, 24, generator=gen).to(dtype)
    weight = (1 + 0.3 * torch.randn(24, generator=gen)).to(dtype)
    ours, theirs = RMSNorm(24, eps=1e-6).to(dtype), Olmo3RMSNorm(24, eps=1e-6).to(dtype)
    ours.weight.data.copy_(weight), theirs.weight.data.copy_(weight)
    assert torch.equal(ours(x), theirs(x))
    ours_g, theirs_g = GatedRMSNorm(24).to(dtype), OlmoHybridRMSNormGated(24, eps=1e-5).to(dtype)
    ours_g.weight.data.copy_(weight), theirs_g.weight.data.copy_(weight)
    assert torch.equal(ours_g(x, gate), theirs_g(x, gate))


def test_backend_choice_is_validated():
    with pytest.raises(ValueError, match="accepted: fla, torch"):
        GatedDeltaNet(hybrid_config(), 0, backend="cuda")
    layer = GatedDeltaNet(hybrid_config(), 0, backend="fla")
    layout = doc_layout(None, 1, 4, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="needs CUDA"):
        layer(torch.randn(1, 4, 64), layout)
