"""The `varlen` attention backend's glue (layout -> cu_seqlens, sliding window -> flash's window_size, GQA
flag as each torch version's wrapper takes it) against the math backend on CPU.

torch's varlen_attn runs flash-attention kernels, CUDA only; here it is replaced by a reference written from
its documented contract (packed [total, heads, dim] tensors, sequences at cu_seq offsets, window_size =
(left, right): query i sees keys i - left .. i + right of its own sequence, -1 unbounded), so what is tested
is our call. tests/test_model_gpu.py::test_cuda_attention_backends runs the real kernel, with gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.attention.varlen as tv

from longctx.model import attention as attn
from longctx.model.varlen import doc_layout


def documented_varlen(calls, gqa_flag: bool):
    def reference(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=None):
        calls.append({"cu_q": cu_q, "max_q": max_q, "window": window_size, "enable_gqa": enable_gqa})
        assert torch.equal(cu_q, cu_k) and cu_q.dtype == torch.int32 and max_q == max_k
        if k.shape[1] != q.shape[1]:  # 2.13's wrapper refuses fewer kv heads without the flag
            assert enable_gqa is (True if gqa_flag else None)
            k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
        out = torch.empty_like(q)
        left, right = window_size
        bounds = cu_q.tolist()
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            assert b - a <= max_q
            i, j = torch.arange(b - a)[:, None], torch.arange(b - a)[None]
            ok = torch.ones(b - a, b - a, dtype=torch.bool)
            if left >= 0:
                ok &= j >= i - left
            if right >= 0:
                ok &= j <= i + right
            s = torch.einsum("qhd,khd->hqk", q[a:b], k[a:b]) * scale
            p = s.masked_fill(~ok, float("-inf")).softmax(-1)
            out[a:b] = torch.einsum("hqk,khd->qhd", p, v[a:b])
        return out

    if not gqa_flag:  # torch 2.11's wrapper: no enable_gqa parameter

        def reference_211(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):
            return reference(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, window_size=window_size)

        return reference_211
    return reference


@pytest.mark.parametrize("gqa_flag", [True, False])
def test_varlen_backend_matches_math(monkeypatch, gqa_flag):
    calls = []
    monkeypatch.setattr(tv, "varlen_attn", documented_varlen(calls, gqa_flag))
    torch.manual_seed(0)
    B, T, H, D = 2, 64, 4, 8
    q = torch.randn(B, T, H, D, dtype=torch.float64)
    k, v = (torch.randn(B, T, 2, D, dtype=torch.float64) for _ in range(2))
    cu = torch.tensor([0, 20, 21, 64, 100, 128], dtype=torch.int32)
    for packed, window in ((None, None), (None, 9), (cu, None), (cu, 9), (cu, 1)):
        layout = doc_layout(packed, B, T, torch.device("cpu"))
        want = attn._math_attend(q, k, v, layout, window, D**-0.5)
        got = attn._varlen_attend(q, k, v, layout, window, D**-0.5)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        call = calls[-1]
        assert call["window"] == ((-1, 0) if window is None else (window - 1, 0))
        if packed is None:  # one document per row
            assert call["cu_q"].tolist() == [0, T, 2 * T] and call["max_q"] == T
        else:
            assert call["cu_q"].tolist() == cu.tolist() and call["max_q"] == 43


def test_varlen_backend_is_forced_by_name(monkeypatch):
    calls = []
    monkeypatch.setattr(tv, "varlen_attn", documented_varlen(calls, True))
    monkeypatch.setenv("LONGCTX_ATTN_BACKEND", "varlen")
    q = torch.randn(1, 16, 2, 4)
    layout = doc_layout(None, 1, 16, torch.device("cpu"))
    assert attn.select_backend(q, layout, None) == "varlen"
    attn.attend(q, q, q, layout, None, 0.5)
    assert len(calls) == 1


def test_varlen_switch_takes_packed_and_windowed_calls_only(monkeypatch):
    """On CUDA in bf16: LONGCTX_VARLEN_ATTENTION unset / auto takes varlen for training where flex would serve
    (packed documents; a sliding window without fla), fla keeps windows where installed, inference stays on
    sdpa_docs; 1 takes varlen for every packed or windowed call, training and inference; 0 never (flex). One
    document per row stays on cuDNN's SDPA throughout."""
    import types

    monkeypatch.delenv("LONGCTX_ATTN_BACKEND", raising=False)
    monkeypatch.setattr(attn, "_flash_fns", lambda: False)  # no flash-attn package
    q = types.SimpleNamespace(is_cuda=True, dtype=torch.bfloat16, shape=(1, 16, 2, 64))  # what select_backend reads
    cpu = torch.device("cpu")
    whole, packed = doc_layout(None, 1, 16, cpu), doc_layout(torch.tensor([0, 5, 16]), 1, 16, cpu)

    def choices(value, fla=False):
        if value is None:
            monkeypatch.delenv("LONGCTX_VARLEN_ATTENTION", raising=False)
        else:
            monkeypatch.setenv("LONGCTX_VARLEN_ATTENTION", value)
        monkeypatch.setattr(attn, "_fla_attn", lambda: fla)
        out = {}
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                for name, layout, window in (("whole", whole, None), ("packed", packed, None), ("window", whole, 8)):
                    out[(grad, name)] = attn.select_backend(q, layout, window)
        return out

    inference = {(False, "whole"): "sdpa", (False, "packed"): "sdpa_docs", (False, "window"): "sdpa_docs"}
    for auto in (None, "auto"):
        assert choices(auto) == {
            (True, "whole"): "sdpa",
            (True, "packed"): "varlen",
            (True, "window"): "varlen",
            **inference,
        }
        assert choices(auto, fla=True)[(True, "window")] == "fla"
    for fla in (False, True):
        assert choices("0", fla) == {
            (True, "whole"): "sdpa",
            (True, "packed"): "flex",
            (True, "window"): "fla" if fla else "flex",
            **inference,
        }
        got = choices("1", fla)
        assert got[(True, "whole")] == got[(False, "whole")] == "sdpa"
        assert {v for k, v in got.items() if k[1] != "whole"} == {"varlen"}
    monkeypatch.setattr(attn, "varlen_fn", lambda: False)  # torch < 2.11: flex as before
    assert choices(None)[(True, "packed")] == choices(None)[(True, "window")] == "flex"


def test_bad_varlen_switch_is_one_line(monkeypatch, capsys):
    from longctx.cli import main

    monkeypatch.setenv("LONGCTX_VARLEN_ATTENTION", "maybe")
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LONGCTX_VARLEN_ATTENTION='maybe'" in err[0]
