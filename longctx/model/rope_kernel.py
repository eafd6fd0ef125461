"""RoPE on q and k in one Triton kernel each way, with transformers' float32 arithmetic.

`rope_methods.apply_rotary` rotates as transformers' Olmo models do: float32 cos/sin tables, q and k promoted
to float32, `x * cos + rotate_half(x) * sin`, one rounding to their dtype at the end. On a GPU that is a
broadcast multiply, rotate_half's chunk, negation and cat, a second multiply, an add and a cast, each a pass
over q or k in float32 (and as many again backward): about 10 ms of a hybrid-1b 16k training step on an H200
for its 4 attention layers (docs/benchmarks.md, "Where a step's time goes"). Here each of q and k is read
once with the float32 tables and written once, the same float32 products and sums before the one rounding
(a GPU may fuse a product and a sum into one FMA: within a float32 ulp of the reference before the rounding to
bf16). Backward applies the transposed rotation, dx1 = dy1 c1 + dy2 s2, dx2 = dy2 c2 - dy1 s1, in float32 and
rounds once (autograd through the reference rounds each of its two terms to bf16 and adds them in bf16).

ENABLED (set by code): None (the default) follows LONGCTX_FUSED_ROPE (longctx.env: 1 / auto on, 0 off);
True / False force it. Applies to CUDA tensors (DEVICES) with float32 tables and Triton installed;
anything else takes rope_methods.apply_rotary. On by default since measured: on one H200, 16k training steps
without checkpointing, hybrid-1b 58,667 against 55,754 tok/s (+5.2%) and transformer-1b (RoPE on all 16 layers)
54,791 against 48,959 (+11.9%) (docs/benchmarks.md).
"""

from __future__ import annotations

import torch

from longctx import env

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: the reference path
    triton = None

ENABLED: bool | None = None
DEVICES = ("cuda",)


def enabled() -> bool:
    """ENABLED, or when that is None LONGCTX_FUSED_ROPE as it is now (auto, unset: on)."""
    return env.switch("LONGCTX_FUSED_ROPE", ENABLED) is not False


def available() -> bool:
    """On (enabled()) and Triton installed: a DEVICES tensor rotates through the kernel where applies() says so."""
    return enabled() and triton is not None


def applies(x: torch.Tensor, cos: torch.Tensor) -> bool:
    """Whether rotate() serves this q/k [B, T, H, D] and table: available(), a DEVICES tensor, float32
    tables without gradients, an even head dim the table covers, one table row per token or per position."""
    return (
        available()
        and x.device.type in DEVICES
        and cos.dtype == torch.float32
        and not cos.requires_grad
        and x.dim() == 4
        and x.shape[-1] % 2 == 0
        and cos.shape[-1] == x.shape[-1]
        and cos.numel() // max(cos.shape[-1], 1) in (x.shape[1], x.shape[0] * x.shape[1])
    )


if triton is not None:

    @triton.jit
    def _rotate_kernel(
        X,
        COS,
        SIN,
        Y,
        cos_rows,
        heads,
        x_row,
        x_head,
        y_row,
        y_head,
        HALF: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BACKWARD: tl.constexpr,
    ):
        row = tl.program_id(0)  # one token: every head of it
        c_row = (row % cos_rows).to(tl.int64)
        d = tl.arange(0, BLOCK_D)
        h = tl.arange(0, BLOCK_H)
        dm = d < HALF
        m = (h[:, None] < heads) & dm[None, :]
        c1 = tl.load(COS + c_row * 2 * HALF + d, mask=dm, other=0.0)[None, :]
        c2 = tl.load(COS + c_row * 2 * HALF + HALF + d, mask=dm, other=0.0)[None, :]
        s1 = tl.load(SIN + c_row * 2 * HALF + d, mask=dm, other=0.0)[None, :]
        s2 = tl.load(SIN + c_row * 2 * HALF + HALF + d, mask=dm, other=0.0)[None, :]
        xp = X + row.to(tl.int64) * x_row + h[:, None] * x_head + d[None, :]
        x1 = tl.load(xp, mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(xp + HALF, mask=m, other=0.0).to(tl.float32)
        if BACKWARD:
            y1 = x1 * c1 + x2 * s2
            y2 = x2 * c2 - x1 * s1
        else:
            y1 = x1 * c1 - x2 * s1
            y2 = x2 * c2 + x1 * s2
        yp = Y + row.to(tl.int64) * y_row + h[:, None] * y_head + d[None, :]
        tl.store(yp, y1.to(Y.dtype.element_ty), mask=m)
        tl.store(yp + HALF, y2.to(Y.dtype.element_ty), mask=m)


def _launch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> torch.Tensor:
    B, T, H, D = x.shape
    if x.stride(-1) != 1 or x.stride(0) != T * x.stride(1):  # rows of tokens with unit-stride heads
        x = x.contiguous()
    tables = [t.reshape(-1, D).contiguous() for t in (cos, sin)]
    cos_rows = tables[0].shape[0]
    if cos_rows not in (T, B * T):
        raise ValueError(f"RoPE tables of {cos_rows} positions for q/k of {B} x {T} tokens")
    y = torch.empty((B, T, H, D), dtype=x.dtype, device=x.device)
    _rotate_kernel[(B * T,)](
        x,
        *tables,
        y,
        cos_rows,
        H,
        x.stride(1),
        x.stride(2),
        y.stride(1),
        y.stride(2),
        HALF=D // 2,
        BLOCK_H=triton.next_power_of_2(H),
        BLOCK_D=triton.next_power_of_2(D // 2),
        BACKWARD=backward,
    )
    return y


class _Rotate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _launch(x, cos, sin, backward=False)

    @staticmethod
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensors
        return _launch(dy, cos, sin, backward=True), None, None


def rotate(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """rope_methods.apply_rotary(q, k, cos, sin, unsqueeze_dim=2) for q/k [B, T, H, D] and float32 cos/sin
    [B, T, D], [1, T, D] or [T, D]; check applies() first."""
    return _Rotate.apply(q, cos, sin), _Rotate.apply(k, cos, sin)
