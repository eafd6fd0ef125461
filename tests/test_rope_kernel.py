"""longctx.model.rope_kernel against rope_methods.apply_rotary (transformers' arithmetic) and the float64 rotation.

Where Triton is installed, its interpreter runs the kernel on CPU tensors in a subprocess (TRITON_INTERPRET=1 has
to be set before Triton is imported): numpy rounds every float32 product and sum as PyTorch's CPU kernels do, so
the forward must equal the reference bit for bit. On a GPU (marked gpu) products may fuse into FMAs: within one
bf16 rounding. Backward: the kernel rounds once, the reference's autograd twice, so both are held to the float64
gradient.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import rope_methods
from longctx.model import rope_kernel

ROOT = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent(
    """
    import torch
    import rope_methods
    from longctx.model import rope_kernel

    DEVICE = torch.device(DEVICE_NAME)
    if DEVICE.type == "cpu":
        rope_kernel.DEVICES = ("cpu",)
    rope_kernel.ENABLED = True
    torch.manual_seed(0)
    worst = {}
    for dtype in (torch.float32, torch.bfloat16):
        for B, T, H, Hk, D, table in ((2, 5, 3, 1, 8, "batch"), (2, 7, 4, 2, 16, "shared"), (1, 9, 5, 5, 6, "flat")):
            pos = torch.randint(0, 4096, (B if table == "batch" else 1, T))
            inv = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
            cos, sin = rope_methods.cos_sin(inv, 1.17, pos)
            if table == "flat":
                cos, sin = cos[0], sin[0]
            cos, sin = cos.to(DEVICE), sin.to(DEVICE)
            # q as the model makes it: a view of a projection; k transposed (not token rows): copied first
            q = torch.randn(B, T, H * D, device=DEVICE).to(dtype).view(B, T, H, D).requires_grad_()
            k = torch.randn(B, Hk, T, D, device=DEVICE).to(dtype).transpose(1, 2).requires_grad_()
            assert rope_kernel.applies(q, cos)
            got = rope_kernel.rotate(q, k, cos, sin)
            want = rope_methods.apply_rotary(q, k, cos, sin, unsqueeze_dim=2)
            dy = [torch.randn_like(t, dtype=torch.float32).to(dtype) for t in want]
            g_got = torch.autograd.grad(got, (q, k), dy)
            g_want = torch.autograd.grad(want, (q, k), dy)
            # float64 truth of the same rotation and of its gradient (the transposed rotation of dy)
            q64, k64 = (t.detach().double().requires_grad_() for t in (q, k))
            exact = rope_methods.apply_rotary(q64, k64, cos.double(), sin.double(), unsqueeze_dim=2)
            g_exact = torch.autograd.grad(exact, (q64, k64), [d.double() for d in dy])

            def note(key, value):
                worst[key + (str(dtype),)] = max(worst.get(key + (str(dtype),), 0.0), value)

            def err(a, e):  # relative to the tensor's scale
                return ((a.double() - e).abs().max() / e.abs().max()).item()

            for a, b, e in zip(got, want, exact):
                assert a.dtype == b.dtype == dtype and a.shape == b.shape
                note(("fwd-vs-ref",), (a.float() - b.float()).abs().max().item())
                note(("fwd-differ",), (a != b).float().mean().item())
                note(("fwd",), err(a, e))
                note(("fwd-ref",), err(b, e))
            for a, b, e in zip(g_got, g_want, g_exact):
                assert a.dtype == dtype and a.shape == e.shape
                note(("bwd",), err(a, e))
                note(("bwd-ref",), err(b, e))
    print(repr(worst))
    """
)


def _run_check(device: str, extra_env: dict) -> dict:
    script = CHECK.replace("DEVICE_NAME", repr(device))
    env = {**os.environ, **extra_env}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    import ast

    return {k: v for k, v in ast.literal_eval(run.stdout.strip().splitlines()[-1]).items()}


def _check_errors(worst: dict, differ_bf16: float, rounding: float = 2**-8, vs_ref: bool = True) -> None:
    """Forward: in float32 the reference's values (FMAs on a GPU: within float32 rounding), in bf16 at most
    differ_bf16 of the elements differ from it; both directions within one bf16 rounding of the float64 truth
    (relative to the tensor's scale) and, with vs_ref, as close as the reference or closer."""
    f32, bf16 = "torch.float32", "torch.bfloat16"
    assert worst[("fwd-vs-ref", f32)] < 1e-5 and worst[("fwd", f32)] < 1e-6, worst
    assert worst[("fwd-differ", bf16)] <= differ_bf16 and worst[("fwd-vs-ref", bf16)] <= 2**-7 * 16, worst
    assert worst[("bwd", f32)] < 1e-6, worst
    for kind in ("fwd", "bwd"):
        assert worst[(kind, bf16)] <= rounding, worst
        assert not vs_ref or worst[(kind, bf16)] <= worst[(kind + "-ref", bf16)] * 1.01, worst


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed here")
def test_interpreted_kernel_equals_the_reference():
    worst = _run_check("cpu", {"TRITON_INTERPRET": "1"})
    assert worst[("fwd-vs-ref", "torch.float32")] == 0.0, worst  # numpy rounds each product and sum
    # the interpreter's bf16 cast truncates (torch's rounds to nearest even): one bf16 step, not half of one
    _check_errors(worst, differ_bf16=1.0, rounding=2**-7, vs_ref=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_kernel_matches_the_reference():
    worst = _run_check("cuda", {})
    _check_errors(worst, differ_bf16=0.01)  # round-to-nearest-even as torch casts: only FMA ties differ


def test_on_by_default_and_never_on_cpu(monkeypatch):
    """unset / auto / 1 is on, 0 off, code's ENABLED over the switch; on still leaves CPU tensors (and float
    tables with gradients, or no Triton) to the reference."""
    q = torch.zeros(1, 4, 2, 8)
    cos = torch.zeros(1, 4, 8)
    monkeypatch.setattr(rope_kernel, "ENABLED", None)
    for value, on in ((None, True), ("auto", True), ("1", True), ("on", True), ("0", False), ("off", False)):
        if value is None:
            monkeypatch.delenv("LONGCTX_FUSED_ROPE", raising=False)
        else:
            monkeypatch.setenv("LONGCTX_FUSED_ROPE", value)
        assert rope_kernel.enabled() is on, value
    monkeypatch.setattr(rope_kernel, "ENABLED", True)
    assert rope_kernel.enabled() is True  # over the switch's 0
    monkeypatch.setattr(rope_kernel, "ENABLED", False)
    monkeypatch.setenv("LONGCTX_FUSED_ROPE", "1")
    assert rope_kernel.enabled() is False
    monkeypatch.setattr(rope_kernel, "ENABLED", None)
    assert not rope_kernel.applies(q, cos)  # CPU tensors
    monkeypatch.setattr(rope_kernel, "DEVICES", ("cpu",))
    monkeypatch.setattr(rope_kernel, "triton", object())
    assert rope_kernel.applies(q, cos)
    assert not rope_kernel.applies(q, cos.to(torch.bfloat16))
    assert not rope_kernel.applies(q, torch.zeros(1, 3, 8))  # 3 table rows for 4 positions: the reference
    assert rope_kernel.applies(torch.zeros(2, 4, 2, 8), torch.zeros(2, 4, 8))  # a row per token
    assert not rope_kernel.applies(q, cos.requires_grad_())
    assert rope_kernel.available()
    monkeypatch.setattr(rope_kernel, "triton", None)
    assert not rope_kernel.available() and not rope_kernel.applies(q, torch.zeros(1, 4, 8))


def test_attention_takes_the_kernel_where_it_applies(monkeypatch):
    """Attention.qkv hands q/k to rope_kernel.rotate exactly where applies() says so, else to the reference."""
    from longctx.model import attention as attn_mod
    from longctx.model.config import load_config
    from longctx.model.hybrid import HybridLM

    config = load_config("hybrid-tiny")
    model = HybridLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, 12))
    with torch.no_grad():
        want = model(ids)
    calls = []

    def rotate(q, k, cos, sin):
        calls.append(q.shape)
        return rope_methods.apply_rotary(q, k, cos, sin, unsqueeze_dim=2)

    monkeypatch.setattr(attn_mod.rope_kernel, "applies", lambda x, cos: True)
    monkeypatch.setattr(attn_mod.rope_kernel, "rotate", rotate)
    with torch.no_grad():
        got = model(ids)
    n_attn = sum(t != "linear_attention" for t in config.layer_types)
    assert len(calls) == n_attn and torch.equal(got, want)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed here")
def test_kernel_compiles_for_hopper_and_rounds_to_nearest():
    """Triton compiles the kernel for sm_90 with no GPU present (its own ptxas): every dtype both ways, and the
    cast to bf16 is PTX's round-to-nearest-even (cvt.rn), as torch's."""
    code = textwrap.dedent(
        """
        import re, triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from longctx.model import rope_kernel
        ints = ("cos_rows", "heads", "x_row", "x_head", "y_row", "y_head")
        for dt in ("bf16", "fp16", "fp32"):
            for backward in (False, True):
                sig = {"X": "*" + dt, "COS": "*fp32", "SIN": "*fp32", "Y": "*" + dt, **dict.fromkeys(ints, "i32")}
                sig.update(dict.fromkeys(("HALF", "BLOCK_H", "BLOCK_D", "BACKWARD"), "constexpr"))
                consts = {"HALF": 64, "BLOCK_H": 16, "BLOCK_D": 64, "BACKWARD": backward}
                src = ASTSource(fn=rope_kernel._rotate_kernel, signature=sig, constexprs=consts)
                ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"]
                casts = set(re.findall(r"cvt\\.[a-z0-9.]+", ptx))
                if dt == "bf16":
                    assert "cvt.rn.bf16.f32" in casts, casts
        print("ok")
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_whole_model_with_the_kernel_matches_the_reference(monkeypatch):
    """An Olmo 3 model (RoPE on every layer, sliding and full) on CUDA: with the kernel its fp32 logits and
    gradients equal the reference path's to float32 rounding, and in bf16 they are no further from the fp32
    reference than the reference path's bf16 run is."""
    import copy

    import torch.nn.functional as F

    from longctx.model import fused
    from longctx.model.config import load_config
    from longctx.model.hybrid import HybridLM

    # SDPA everywhere: fla's sliding-window kernel takes fp32 dots in TF32, where an ulp of q decides a rounding
    monkeypatch.setenv("LONGCTX_ATTN_BACKEND", "sdpa")
    # PyTorch's RMSNorm / SwiGLU on both sides: RoPE is what differs (fla's norm kernels autotune per dtype and
    # shape on a fresh machine; with them the test took 162 s on an H200)
    monkeypatch.setattr(fused, "ENABLED", False)
    torch.manual_seed(0)
    base = HybridLM(load_config("transformer-tiny"))
    ids = torch.randint(2, base.config.vocab_size, (2, 256), device="cuda")

    def run(dtype, kernel: bool):
        monkeypatch.setattr(rope_kernel, "ENABLED", kernel)
        m = copy.deepcopy(base).to(device="cuda", dtype=dtype)
        logits = m(ids)
        F.cross_entropy(logits.flatten(0, 1).float(), ids.flatten()).backward()
        return [logits.detach().float()] + [p.grad.float() for p in m.parameters()]

    def rel(a, b):
        return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()

    exact, exact_k = run(torch.float32, False), run(torch.float32, True)
    plain16, kernel16 = run(torch.bfloat16, False), run(torch.bfloat16, True)
    for i, (e, ek, p16, k16) in enumerate(zip(exact, exact_k, plain16, kernel16, strict=True)):
        assert rel(ek, e) < 1e-5, i
        assert rel(k16, e) <= max(1.5 * rel(p16, e), 1e-3), i
