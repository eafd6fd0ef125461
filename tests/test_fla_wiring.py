"""The fla branches of the GDN layer and of cached prefill, on CPU, with fla's three entry points
stood in by fakes built from the torch reference and held to fla's calling conventions
(q/k/v [B, T, H, .] heads-last, cu_seqlens only with B == 1, int64 cu_seqlens, conv weight [C, W],
final states [N, HV, K, V]). What fla's kernels compute is tested on the GPU (tests/test_model_gpu.py);
this tests that our code hands them the right tensors and reads back the right ones."""

from __future__ import annotations

import pytest
import torch
from test_model_util import hybrid_config, max_diff

from longctx.model import HybridLM, gdn
from longctx.model.generate import greedy_generate, prefill
from longctx.model.norms import GatedRMSNorm

CALLS: list[str] = []
CU_SEEN: set[tuple[int, int]] = set()  # (id of cu_seqlens, id of cu_seqlens_cpu) handed to fla


def _segments(T, cu_seqlens, B):
    if cu_seqlens is None:
        return None
    assert B == 1, "fla's varlen kernels take one flat row"
    assert cu_seqlens.dtype == torch.long and int(cu_seqlens[0]) == 0 and int(cu_seqlens[-1]) == T
    c = cu_seqlens.tolist()
    return list(zip(c[:-1], c[1:], strict=True))


def fake_delta_rule(
    q,
    k,
    v,
    g,
    beta,
    *,
    scale,
    use_qk_l2norm_in_kernel,
    output_final_state=False,
    cu_seqlens=None,
    cu_seqlens_cpu=None,
    initial_state=None,
):
    CALLS.append("delta_rule")
    if cu_seqlens is not None:
        CU_SEEN.add((id(cu_seqlens), id(cu_seqlens_cpu)))
    assert use_qk_l2norm_in_kernel and initial_state is None
    B, T = q.shape[:2]
    assert k.shape[:2] == v.shape[:2] == g.shape[:2] == beta.shape[:2] == (B, T)
    heads = gdn.heads_first(q, k, v, g, beta, scale)
    segs = _segments(T, cu_seqlens, B) or [(0, T)]
    outs, states = [], []
    for a, b in segs:
        o, s = gdn.chunk_delta_rule_ref(*(h[:, :, a:b] for h in heads), output_final_state=True)
        outs.append(o)
        states.append(s)
    o = torch.cat(outs, 2).transpose(1, 2).to(v.dtype)
    return o, (torch.cat(states) if output_final_state else None)  # [N, HV, K, V]


def fake_conv(x, *, weight, activation, cu_seqlens=None, cu_seqlens_cpu=None):
    CALLS.append("conv")
    if cu_seqlens is not None:
        CU_SEEN.add((id(cu_seqlens), id(cu_seqlens_cpu)))
    assert activation == "silu" and weight.dim() == 2 and weight.shape[0] == x.shape[-1]
    B, T, _ = x.shape
    segs = _segments(T, cu_seqlens, B)
    doc_pos = None
    if segs is not None:
        doc_pos = torch.cat([torch.arange(b - a) for a, b in segs])[None]
    return gdn.causal_conv_ref(x, weight.unsqueeze(1), doc_pos), None


def fake_norm(o, gate, weight, bias, *, activation, eps):
    CALLS.append("norm")
    assert bias is None and activation == "silu" and o.shape == gate.shape
    norm = GatedRMSNorm(weight.shape[0], eps=eps)
    norm.weight = torch.nn.Parameter(weight)
    return norm(o, gate)


@pytest.fixture()
def fake_fla(monkeypatch):
    monkeypatch.setattr(gdn, "fla_ops", lambda: (fake_delta_rule, fake_conv, fake_norm))
    monkeypatch.setattr(gdn.GatedDeltaNet, "use_fla", lambda self, x: self.backend != "torch")
    CALLS.clear()
    CU_SEEN.clear()
    return CALLS


def models():
    torch.manual_seed(0)
    fla_model = HybridLM(hybrid_config(), gdn_backend="fla").eval()
    ref = HybridLM(hybrid_config(), gdn_backend="torch").eval()
    ref.load_state_dict(fla_model.state_dict())
    return fla_model, ref


def test_forward_fla_branch_matches_torch_reference(fake_fla):
    fla_model, ref = models()
    ids = torch.randint(2, fla_model.config.vocab_size, (2, 150))
    cu = torch.tensor([0, 40, 150, 190, 300], dtype=torch.int32)  # packed: documents across both rows
    with torch.no_grad():
        for kw in ({}, {"cu_seqlens": cu}):
            CALLS.clear()
            a, b = fla_model(ids, **kw), ref(ids, **kw)
            assert {"delta_rule", "conv", "norm"} <= set(CALLS)
            assert max_diff(a, b) < 1e-5


def test_packed_forward_hands_fla_one_cu_seqlens_pair(fake_fla):
    """fla memoises chunk indices by tensor identity: every conv and delta-rule call of one forward
    must get the same cu_seqlens objects (int64 on the device, int64 on the host)."""
    fla_model, _ = models()
    ids = torch.randint(2, fla_model.config.vocab_size, (2, 150))
    cu = torch.tensor([0, 40, 150, 190, 300], dtype=torch.int32)
    with torch.no_grad():
        fla_model(ids, cu_seqlens=cu)
    assert CALLS.count("delta_rule") == sum(t == "linear_attention" for t in fla_model.config.layer_types) > 1
    assert len(CU_SEEN) == 1


def test_prefill_fla_branch_hands_back_each_prompts_state(fake_fla):
    fla_model, ref = models()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, 200, (n,), generator=gen).tolist() for n in (3, 70, 131, 9)]
    cache_a, logits_a = prefill(fla_model, prompts, capacity=160, max_prefill_tokens=150)
    assert "delta_rule" in CALLS
    CALLS.clear()
    cache_b, logits_b = prefill(ref, prompts, capacity=160, max_prefill_tokens=150)
    assert not CALLS
    assert max_diff(logits_a, logits_b) < 1e-5
    for ca, cb in zip(cache_a.layers, cache_b.layers, strict=True):
        if hasattr(ca, "state"):
            assert ca.state.dtype == torch.float32 and max_diff(ca.state, cb.state) < 1e-5
    out_a = greedy_generate(fla_model, prompts, 8)
    assert out_a == greedy_generate(ref, prompts, 8)
