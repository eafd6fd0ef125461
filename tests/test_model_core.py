"""HybridLM features beyond HF parity: hidden states, checkpointing, counts, FLOPs, backends, dtypes."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_model_util import VOCAB, hf_reference, hybrid_config, max_diff, olmo3_config, randomize
from transformers import AutoModelForCausalLM

from longctx.model import HybridLM, check_config
from longctx.model import attention as attn
from longctx.model.varlen import doc_layout


def tiny(kind="olmo_hybrid", seed=0, **kw):
    torch.manual_seed(seed)
    model = HybridLM(hybrid_config(**kw) if kind == "olmo_hybrid" else olmo3_config(**kw))
    return randomize(model, seed)


def test_forward_is_head_of_forward_hidden():
    model = tiny().eval()
    x = torch.randint(0, VOCAB, (2, 30))
    with torch.no_grad():
        hidden = model.forward_hidden(x)
        assert hidden.shape == (2, 30, 64)
        assert torch.equal(model.lm_head(hidden), model(x))


def loss_and_grads(model, x, cu):
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x, cu_seqlens=cu).flatten(0, 1), x.flatten())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kind", ["olmo_hybrid", "olmo3"])
def test_gradient_checkpointing_same_grads(kind):
    model = tiny(kind).train()
    x = torch.randint(0, VOCAB, (2, 40))
    cu = torch.tensor([0, 17, 40, 80], dtype=torch.int32)
    calls = []
    # a pre-hook: non-reentrant recompute stops early, before forward hooks would run
    model.model.layers[0].register_forward_pre_hook(lambda *a: calls.append(1))

    loss_a, grads_a = loss_and_grads(model, x, cu)
    assert len(calls) == 1
    model.gradient_checkpointing = True
    loss_b, grads_b = loss_and_grads(model, x, cu)
    assert len(calls) == 3  # forward, then recomputed in backward
    assert torch.allclose(loss_a, loss_b)
    assert all(torch.allclose(grads_a[n], grads_b[n], atol=1e-6) for n in grads_a)
    assert all(g.abs().sum() > 0 for n, g in grads_a.items()), "every parameter gets a gradient"


def test_checkpointed_blocks_cheapest_recompute_first():
    """A fraction checkpoints that share of the blocks: GDN blocks first (recomputation linear in T),
    then sliding-window, then full attention (quadratic), evenly spread within each kind."""
    from longctx.model.hybrid import checkpointed_blocks

    hybrid = ["linear_attention"] * 3 + ["full_attention"]
    hybrid = hybrid * 4  # hybrid-1b's 16 blocks: attention at 3, 7, 11, 15
    gdn = {i for i, t in enumerate(hybrid) if t == "linear_attention"}
    assert checkpointed_blocks(hybrid, True) == set(range(16)) == checkpointed_blocks(hybrid, 1.0)
    assert checkpointed_blocks(hybrid, False) == set() == checkpointed_blocks(hybrid, 0.0)
    assert checkpointed_blocks(hybrid, 0.75) == gdn
    two_attn = checkpointed_blocks(hybrid, 0.875) - gdn
    assert gdn <= checkpointed_blocks(hybrid, 0.875) and len(two_attn) == 2 and max(two_attn) - min(two_attn) == 8
    quarter = checkpointed_blocks(hybrid, 0.25)
    assert len(quarter) == 4 and quarter <= gdn and max(quarter) - min(quarter) >= 8  # spread, not 0-3
    olmo3 = (["sliding_attention"] * 3 + ["full_attention"]) * 2
    assert checkpointed_blocks(olmo3, 0.75) == {0, 1, 2, 4, 5, 6}


@pytest.mark.parametrize("kind", ["olmo_hybrid", "olmo3"])
def test_partial_checkpointing_same_grads_recomputes_only_chosen_blocks(kind):
    from longctx.model.hybrid import checkpointed_blocks

    model = tiny(kind).train()
    x = torch.randint(0, VOCAB, (2, 40))
    cu = torch.tensor([0, 17, 40, 80], dtype=torch.int32)
    calls = [0] * len(model.model.layers)
    for i, layer in enumerate(model.model.layers):
        layer.register_forward_pre_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))

    loss_a, grads_a = loss_and_grads(model, x, cu)
    model.gradient_checkpointing = 0.5
    calls[:] = [0] * len(calls)
    loss_b, grads_b = loss_and_grads(model, x, cu)
    chosen = checkpointed_blocks(model.config.layer_types, 0.5)
    assert 0 < len(chosen) < len(calls)
    assert calls == [2 if i in chosen else 1 for i in range(len(calls))]
    assert torch.allclose(loss_a, loss_b)
    assert all(torch.allclose(grads_a[n], grads_b[n], atol=1e-6) for n in grads_a)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("kind", ["olmo_hybrid", "olmo3"])
def test_num_params_matches_transformers(kind, tied):
    config = (hybrid_config if kind == "olmo_hybrid" else olmo3_config)(tie_word_embeddings=tied)
    ref = AutoModelForCausalLM.from_config(config)
    model = HybridLM(config)
    assert model.num_params() == ref.num_parameters()
    assert model.num_params(exclude_embeddings=True) == ref.num_parameters() - VOCAB * 64
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied


@pytest.mark.parametrize("seq_len", [10, 16, 100])
def test_flops_attention_context_counts_mask(seq_len):
    """The attention term uses the mean number of attended keys; count them from the real mask."""
    model = HybridLM(olmo3_config(tie_word_embeddings=True))
    layout = doc_layout(None, 1, seq_len, torch.device("cpu"))
    expected = 6.0 * model.num_params()  # tied: the head matrix is the embedding, counted once
    for layer in model.model.layers:
        a = layer.self_attn
        keys = attn.dense_mask(layout, a.window, torch.device("cpu")).sum().item()
        expected += 12.0 * a.num_heads * a.head_dim * keys / seq_len
    assert model.flops_per_token(seq_len) == pytest.approx(expected, rel=1e-12)


def test_flops_gdn_term_and_untied_head():
    config = hybrid_config()
    model = HybridLM(config)
    gdn = 3 * 18.0 * config.linear_num_value_heads * config.linear_key_head_dim * config.linear_value_head_dim
    attention = 12.0 * 4 * 16 * (50 + 1) / 2
    n_matmul = model.num_params() - VOCAB * 64  # the input embedding is a lookup
    assert model.flops_per_token(50) == pytest.approx(6.0 * n_matmul + gdn + attention, rel=1e-12)


def test_fresh_init():
    model = HybridLM(hybrid_config(linear_a_log_min=1.0, linear_a_log_max=16.0))
    gdn = model.model.layers[0].linear_attn
    assert ((gdn.A_log.exp() >= 1.0) & (gdn.A_log.exp() <= 16.0)).all()
    dt = torch.nn.functional.softplus(gdn.dt_bias)
    assert ((dt >= 1e-3 - 1e-6) & (dt <= 0.1 + 1e-6)).all()
    assert torch.equal(model.model.embed_tokens.weight[0], torch.zeros(64))  # pad_token_id=0
    assert model.model.layers[3].post_attention_layernorm.weight.eq(1).all()
    assert 0.015 < model.lm_head.weight.std().item() < 0.025


def test_attention_backends_agree_on_cpu():
    """flex (eager on CPU: checks its mask_mod) and math, with packing, GQA and a sliding window."""
    gen = torch.Generator().manual_seed(0)
    B, T, H, D = 2, 40, 4, 16
    q, k, v = (
        torch.randn(B, T, H, D, generator=gen),
        torch.randn(B, T, 2, D, generator=gen),
        torch.randn(B, T, 2, D, generator=gen),
    )
    layout = doc_layout(torch.tensor([0, 13, 40, 45, 80], dtype=torch.int32), B, T, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for window in (None, 7):
            math = attn._math_attend(q, k, v, layout, window, 0.25)
            assert max_diff(attn._flex_attend(q, k, v, layout, window, 0.25), math) < 1e-5
    plain = doc_layout(None, B, T, torch.device("cpu"))
    assert max_diff(attn._sdpa_attend(q, k, v, plain, None, 0.25), attn._math_attend(q, k, v, plain, None, 0.25)) < 1e-5


def test_sdpa_docs_backend_matches_math(monkeypatch):
    """Inference backend: one SDPA call per document, a sliding window as blocks of queries against
    the keys they can see. Windows shorter than, equal to and longer than the documents; GQA."""
    gen = torch.Generator().manual_seed(1)
    B, T, H, D = 2, 70, 4, 16
    q, k, v = (
        torch.randn(B, T, H, D, generator=gen),
        torch.randn(B, T, 2, D, generator=gen),
        torch.randn(B, T, 2, D, generator=gen),
    )
    packed = doc_layout(torch.tensor([0, 13, 70, 71, 100, 140], dtype=torch.int32), B, T, torch.device("cpu"))
    plain = doc_layout(None, B, T, torch.device("cpu"))
    for block in (1, 10, 4096):  # queries per SDPA call under a window: the window, 10, all
        monkeypatch.setattr(attn, "QUERY_BLOCK", block)
        for layout in (packed, plain):
            for window in (None, 1, 7, 29, 57, 70):
                math = attn._math_attend(q, k, v, layout, window, 0.25)
                got = attn._sdpa_docs_attend(q, k, v, layout, window, 0.25)
                assert max_diff(got, math) < 1e-5, (block, window)


def test_no_grad_on_cuda_avoids_flex(monkeypatch):
    """Inference (no autograd) on CUDA never goes through compiled FlexAttention: every new packed
    length would recompile it, and past torch's recompile limit flex runs eagerly and materialises
    the whole score matrix (an OOM at 8 x 8k-token prompts in a RULER eval on an H200)."""
    from types import SimpleNamespace

    monkeypatch.setattr(attn, "_flash_fns", lambda: False)
    q = SimpleNamespace(is_cuda=True, dtype=torch.bfloat16, shape=(1, 64, 4, 16))
    packed = doc_layout(torch.tensor([0, 13, 64], dtype=torch.int32), 1, 64, torch.device("cpu"))
    plain = doc_layout(None, 1, 64, torch.device("cpu"))
    monkeypatch.delenv("LONGCTX_VARLEN_ATTENTION", raising=False)
    monkeypatch.setattr(attn, "_fla_attn", lambda: False)
    monkeypatch.setattr(attn, "varlen_fn", lambda: False)  # torch < 2.11
    assert attn.select_backend(q, packed, None) == "flex"  # training: one compiled shape, backward
    assert attn.select_backend(q, plain, 8) == "flex"
    assert attn.select_backend(q, plain, None) == "sdpa"
    monkeypatch.setattr(attn, "varlen_fn", lambda: (object(),))  # torch's varlen flash-attention: no compile
    assert attn.select_backend(q, packed, None) == "varlen"
    assert attn.select_backend(q, plain, 8) == "varlen"
    monkeypatch.setattr(attn, "_fla_attn", lambda: (object(),))  # fla installed: windows go through it
    assert attn.select_backend(q, plain, 8) == "fla"
    assert attn.select_backend(q, packed, 8) == "fla"
    assert attn.select_backend(q, packed, None) == "varlen"
    assert (
        attn.select_backend(SimpleNamespace(is_cuda=True, dtype=torch.float32, shape=(1, 64, 4, 16)), plain, 8)
        == "flex"
    )
    with torch.no_grad():
        assert attn.select_backend(q, packed, None) == "sdpa_docs"
        assert attn.select_backend(q, plain, 8) == "sdpa_docs"
        assert attn.select_backend(q, plain, None) == "sdpa"
    with torch.inference_mode():
        assert attn.select_backend(q, packed, 8) == "sdpa_docs"
    cpu = SimpleNamespace(is_cuda=False, dtype=torch.float32, shape=(1, 64, 4, 16))
    assert attn.select_backend(cpu, packed, None) == "math"
    with torch.no_grad():
        assert attn.select_backend(cpu, packed, None) == "sdpa_docs"
        assert attn.select_backend(cpu, plain, None) == "sdpa"  # causal SDPA: no T x T mask


def test_bf16_load_as_accurate_as_transformers(tmp_path):
    ref = hf_reference(hybrid_config())
    ref.save_pretrained(tmp_path)
    ours = HybridLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    ref_bf16 = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    x = torch.randint(0, VOCAB, (1, 70))
    with torch.no_grad():
        exact, out, theirs = ref(x).logits, ours(x), ref_bf16(x).logits
    assert out.dtype == torch.bfloat16
    # bf16 rounding moves logits by ~0.3 here; ours must not add error on top of transformers'
    assert max_diff(out, exact) <= 1.5 * max_diff(theirs, exact)


def test_config_validation():
    bad = hybrid_config()
    bad.layer_types = ["linear_attention", "sliding_attention", "linear_attention", "full_attention"]
    with pytest.raises(ValueError, match="accepted: linear_attention, full_attention"):
        check_config(bad)
    bad = olmo3_config()
    bad.hidden_act = "gelu"
    with pytest.raises(ValueError, match="hidden_act"):
        HybridLM(bad)


def _fla_parallel_attn_semantics(q, k, v, g=None, scale=None, window_size=None, cu_seqlens=None):
    """fla's `parallel_attn` as its docstring defines it, written out loop by loop: q [B, T, HQ, K],
    k/v [B, T, H, K] (GQA when HQ % H == 0), query i sees keys [i - window_size + 1, i] of its own
    sequence; with cu_seqlens the batch must be 1 and the sequences are its segments."""
    assert g is None and (cu_seqlens is None or (q.shape[0] == 1 and cu_seqlens.dtype == torch.int64))
    B, T, HQ, _ = q.shape
    group = HQ // k.shape[2]
    segs = cu_seqlens.tolist() if cu_seqlens is not None else [0, T]
    out = torch.zeros_like(q)
    for b in range(B):
        for a, e in zip(segs[:-1], segs[1:], strict=True):
            for i in range(a, e):
                lo = a if window_size is None else max(a, i - window_size + 1)
                for h in range(HQ):
                    s = (k[b, lo : i + 1, h // group] @ q[b, i, h]) * scale
                    out[b, i, h] = torch.softmax(s, 0) @ v[b, lo : i + 1, h // group]
    return out


def test_fla_attention_backend_wiring(monkeypatch):
    """The 'fla' backend hands fla's parallel_attn what it defines (flattened packed rows with int64
    cu_seqlens, our window as its window_size, GQA as is): with a stand-in that computes fla's
    documented semantics, it matches the dense-mask reference, packed and not, with windows."""
    from longctx.model import optional

    monkeypatch.setattr(
        optional,
        "load",
        lambda *specs: (_fla_parallel_attn_semantics,) if specs == ("fla.ops.attn:parallel_attn",) else False,
    )
    gen = torch.Generator().manual_seed(2)
    B, T, H, D = 2, 24, 4, 8
    q, k, v = (
        torch.randn(B, T, H, D, generator=gen),
        torch.randn(B, T, 2, D, generator=gen),
        torch.randn(B, T, 2, D, generator=gen),
    )
    packed = doc_layout(torch.tensor([0, 5, 24, 25, 40, 48], dtype=torch.int32), B, T, torch.device("cpu"))
    plain = doc_layout(None, B, T, torch.device("cpu"))
    for layout in (packed, plain):
        for window in (None, 1, 4, 30):
            got = attn._fla_attend(q, k, v, layout, window, 0.3)
            assert max_diff(got, attn._math_attend(q, k, v, layout, window, 0.3)) < 1e-5, (layout.packed, window)
    monkeypatch.setattr(optional, "load", lambda *specs: False)
    with pytest.raises(RuntimeError, match="flash-linear-attention"):
        attn._fla_attend(q, k, v, plain, None, 0.3)


def test_cpu_inference_of_one_document_needs_no_dense_mask(monkeypatch):
    """Without autograd on CPU one unpacked sequence goes through causal SDPA (no T x T mask: 4 GiB of
    booleans at 64k), with the math path's output; training keeps the math path."""
    monkeypatch.setattr(attn, "BACKEND", None)
    monkeypatch.delenv("LONGCTX_ATTN_BACKEND", raising=False)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 96, 4, 16, generator=g) for _ in range(3))
    plain = doc_layout(None, 2, 96, torch.device("cpu"))
    assert attn.select_backend(q, plain, None) == "math"
    with torch.no_grad():
        assert attn.select_backend(q, plain, None) == "sdpa"
        got = attn.attend(q, k, v, plain, None, 0.25)
    assert "dense" not in {key[0] for key in plain.cache}
    assert max_diff(got, attn._math_attend(q, k, v, plain, None, 0.25)) < 1e-5
