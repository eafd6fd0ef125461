"""Cross-entropy over the lm head, chunked over tokens.

At 64k tokens and a 100k vocabulary the fp32 logits alone are 26 GB, so they are never built at
once: each chunk of tokens gets its logits, their softmax and its gradient in turn, and only the
gradients w.r.t. the hidden states [N, D] and the head weight [V, D] are kept. Because the loss is a
scalar, its gradient is computed during the forward pass and the backward only scales it; this
costs one extra matmul per chunk less than recomputing logits in the backward.

Returned as sums (not means) so that gradient accumulation, and later data/context parallelism,
can divide by the token count of the whole optimizer step.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch

from longctx.config import LOSS_BACKENDS
from longctx.data.packing import IGNORE_INDEX
from longctx.model import optional


class LossParts(NamedTuple):
    total: torch.Tensor  # ce_sum + z_coef * z_sum; the differentiable one
    ce_sum: torch.Tensor  # summed cross-entropy over counted tokens (detached)
    z_sum: torch.Tensor  # summed logsumexp^2 over counted tokens (detached)
    count: torch.Tensor  # number of counted tokens (labels != ignore_index)


def _eager_terms(logits, y_safe, vf, z_coef: float, need_grad: bool):
    """`_chunk_terms` in place on one fp32 copy of the logits (the default backend); no gradient
    (None) without need_grad."""
    x = logits.to(vf.dtype)
    lse = torch.logsumexp(x, dim=-1)
    target = x.gather(1, y_safe[:, None]).squeeze(1)
    sums = ((lse - target) * vf).sum(), (lse * lse * vf).sum()
    if not need_grad:
        return (None, *sums)
    # d/dlogits [lse - logit_y + z * lse^2] = softmax * (1 + 2 z lse) - onehot(y)
    g = x.sub_(lse[:, None]).exp_()
    g.mul_(((1.0 + 2.0 * z_coef * lse) * vf)[:, None])  # one pass: z-loss factor and mask together
    g[torch.arange(g.shape[0], device=g.device), y_safe] -= vf
    return (g.to(logits.dtype), *sums)


def _chunk_terms(logits, y_safe, vf, z_coef: float, need_grad: bool = True):  # called with need_grad only
    """One chunk's gradient w.r.t. its logits (in the logits' dtype), its summed CE and z terms, written
    as pure functions of the chunk so that torch.compile fuses them: the upcast, the logsumexp and the
    softmax-gradient become one reduction and one pointwise kernel that read the logits in the matmul
    dtype and write the gradient once, instead of the eager path's fp32 copy and in-place passes."""
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 at least, as the eager path
    lse = torch.logsumexp(x, dim=-1)
    target = x.gather(1, y_safe[:, None]).squeeze(1)
    onehot = torch.arange(x.shape[1], device=x.device)[None, :] == y_safe[:, None]
    g = torch.exp(x - lse[:, None]) * ((1.0 + 2.0 * z_coef * lse) * vf)[:, None] - onehot * vf[:, None]
    return g.to(logits.dtype), ((lse - target) * vf).sum(), (lse * lse * vf).sum()


FLA_CE_SPECS = (  # fla's fused cross-entropy kernels, as `chunked-fla` (and `auto` on CUDA) call them
    "fla.modules.fused_cross_entropy.ops:cross_entropy_fwd",
    "fla.modules.fused_cross_entropy.ops:cross_entropy_bwd",
)


def _fla_terms(logits, y_safe, vf, z_coef: float, need_grad: bool):
    """`_chunk_terms` through fla's fused cross-entropy kernels (Triton, no compile step): one kernel reads
    the logits in their own dtype for the logsumexp and the loss, a second reads them again and writes the
    gradient over them in place. Rows with vf = 0 get a zero gradient through dloss = vf."""
    ops = optional.load(*FLA_CE_SPECS)
    if not ops:
        raise RuntimeError("loss backend 'chunked-fla' needs the flash-linear-attention package")
    cross_entropy_fwd, cross_entropy_bwd = ops
    loss, z_loss, lse, _, _ = cross_entropy_fwd(logits, y_safe, lse_square_scale=z_coef)
    sums = ((loss - z_loss) * vf).sum(), (lse * lse * vf).sum()
    if not need_grad:
        return (None, *sums)
    return (cross_entropy_bwd(logits, y_safe, lse, vf, lse_square_scale=z_coef, inplace_backward=True), *sums)


TERMS = ("eager", "compiled", "fla")  # chunked_cross_entropy(terms=...)
_compiled_terms = None


def _fused_terms():
    global _compiled_terms
    if _compiled_terms is None:
        _compiled_terms = torch.compile(_chunk_terms, dynamic=None)
    return _compiled_terms


@functools.cache
def _mm_accumulates_in_place(device: torch.device, dtype: torch.dtype, acc: torch.dtype) -> bool:
    """Whether torch.addmm(acc_tensor, a, b, out_dtype=acc, out=acc_tensor) runs here for dtype inputs (CUDA
    with a torch that has out_dtype; a tiny probe, once per device and dtypes)."""
    if device.type != "cuda" or dtype == acc:
        return False
    try:
        c = torch.ones(3, 2, dtype=acc, device=device)
        a = torch.ones(4, 3, dtype=dtype, device=device)
        torch.addmm(c, a.t(), a[:, :2], out_dtype=acc, out=c)  # a transposed operand, as g.t() is
        return bool((c == 5).all())
    except (TypeError, RuntimeError, NotImplementedError):
        return False


def _add_grad_w(grad_w: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> None:
    """grad_w += g^T h. On CUDA the matmul adds into the float32 accumulator itself (cuBLAS beta = 1): no product
    rounded to bf16 first, and none of the cast and add passes over a [V, D] tensor per chunk (at a 100k
    vocabulary, 411 MB in bf16 and 822 MB in float32 each time)."""
    if _mm_accumulates_in_place(g.device, g.dtype, grad_w.dtype):
        torch.addmm(grad_w, g.t(), h, out_dtype=grad_w.dtype, out=grad_w)
    else:
        grad_w += (g.t() @ h).to(grad_w.dtype)


class _ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk, z_coef, ignore_index, compute_dtype, need_grad, terms=_eager_terms):
        n = hidden.shape[0]
        acc = torch.promote_types(compute_dtype, torch.float32)  # softmax and sums: fp32 at least
        ce_sum = torch.zeros((), dtype=acc, device=hidden.device)
        z_sum = torch.zeros((), dtype=acc, device=hidden.device)
        w = weight.to(compute_dtype)
        grad_h = torch.empty_like(hidden) if need_grad else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_grad else None
        for s in range(0, n, chunk):
            h = hidden[s : s + chunk].to(compute_dtype)
            y = labels[s : s + chunk]
            valid = y != ignore_index
            y_safe = torch.where(valid, y, torch.zeros_like(y))
            g, ce_part, z_part = terms(h @ w.t(), y_safe, valid.to(acc), z_coef, need_grad)
            ce_sum += ce_part
            z_sum += z_part
            if need_grad:
                grad_h[s : s + chunk] = (g @ w).to(hidden.dtype)
                _add_grad_w(grad_w, g, h)
            del g
        if need_grad:
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        total = ce_sum + z_coef * z_sum
        ctx.mark_non_differentiable(ce_sum, z_sum)
        return total, ce_sum, z_sum

    @staticmethod
    def backward(ctx, grad_total, _g_ce, _g_z):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_total.to(grad_h.dtype) if ctx.needs_input_grad[0] else None
        gw = grad_w * grad_total.to(grad_w.dtype) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None, None, None, None, None, None


def _matmul_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The head matmul's dtype: the autocast dtype when autocast is on, else hidden's."""
    dev = hidden.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else hidden.dtype


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk: int = 4096,
    z_loss: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
    compute_dtype: torch.dtype | None = None,
    terms: str = "eager",
) -> LossParts:
    """Summed CE (and z-loss) of logits = hidden @ weight.T against labels, chunk tokens at a time.

    hidden [..., D] and labels [...] are flattened together; weight is the lm head [V, D].
    compute_dtype is the matmul dtype (default: the autocast dtype when autocast is on, else
    hidden's); softmax and the sums are always fp32. terms: how each chunk's softmax gradient is made:
    `eager` (in place on an fp32 copy), `compiled` (`_chunk_terms` through torch.compile) or `fla`
    (fla's fused cross-entropy kernels, CUDA); the gradient is rounded to compute_dtype once in each.
    """
    if terms not in TERMS:
        raise ValueError(f"terms {terms!r} unknown; accepted: {', '.join(TERMS)}")
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    if labels.shape[0] != hidden.shape[0]:
        raise ValueError(f"labels ({labels.shape[0]}) and hidden ({hidden.shape[0]}) hold different token counts")
    compute_dtype = compute_dtype or _matmul_dtype(hidden)
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    if terms == "fla" and hidden.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(f"loss backend 'chunked-fla' runs on CUDA only (the tensors are on {hidden.device.type})")
    # without a gradient there is nothing for torch.compile to fuse
    fn = _fused_terms() if terms == "compiled" and need_grad else _fla_terms if terms == "fla" else _eager_terms
    with torch.autocast(hidden.device.type, enabled=False):
        total, ce_sum, z_sum = _ChunkedLinearCE.apply(
            hidden, weight, labels, int(chunk), float(z_loss), int(ignore_index), compute_dtype, need_grad, fn
        )
    count = (labels != ignore_index).sum()
    return LossParts(total, ce_sum, z_sum, count)


def fla_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    compute_dtype: torch.dtype | None = None,
    num_chunks: int = 8,
) -> LossParts:
    """The same summed CE through fla's fused linear cross-entropy (Triton: logits, softmax and
    their gradient in place, chunk by chunk, in the matmul dtype). No z-loss."""
    try:
        from fla.modules.fused_linear_cross_entropy import fused_linear_cross_entropy_loss
    except ImportError:
        raise RuntimeError("loss backend 'fla' needs the flash-linear-attention package") from None
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    compute_dtype = compute_dtype or _matmul_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        total = fused_linear_cross_entropy_loss(
            hidden.to(compute_dtype),
            labels.contiguous(),
            weight.to(compute_dtype),
            ignore_index=ignore_index,
            reduction="sum",
            num_chunks=num_chunks,
        )
    ce = total.detach().float()
    return LossParts(total, ce, torch.zeros_like(ce), (labels != ignore_index).sum())


def resolve_backend(backend: str, device: torch.device | str | None = None) -> str:
    """The backend `auto` stands for on `device`: chunked-fla on CUDA when fla's cross-entropy kernels import
    (measured 8% faster and 1.9 GiB lighter than chunked on hybrid-1b at 16k, docs/benchmarks.md), else
    chunked. Other names are returned as they are."""
    if backend != "auto":
        return backend
    if device is None or torch.device(device).type != "cuda":
        return "chunked"
    return "chunked-fla" if optional.load(*FLA_CE_SPECS) else "chunked"


def make_loss_fn(backend: str = "chunked", *, chunk: int = 4096, z_loss: float = 0.0, device=None):
    """loss_fn(hidden, head_weight, labels) -> LossParts for the Trainer; `auto` is resolved for `device`
    (resolve_backend)."""
    if backend not in LOSS_BACKENDS:
        raise ValueError(f"loss backend {backend!r} unknown; accepted: {', '.join(LOSS_BACKENDS)}")
    backend = resolve_backend(backend, device)
    if backend == "fla":
        if z_loss:
            raise ValueError("loss backend 'fla' has no z-loss; use the chunked backend with z_loss")
        return fla_cross_entropy

    terms = {"chunked": "eager", "compiled": "compiled", "chunked-fla": "fla"}[backend]

    def chunked(hidden, weight, labels):  # looked up at call time (tests patch it)
        return chunked_cross_entropy(hidden, weight, labels, chunk=chunk, z_loss=z_loss, terms=terms)

    return chunked


@torch.no_grad()
def heldout_ce(model, batches: list[dict], loss_fn, device: torch.device, shard=None, head=None):
    """(summed next-token CE, labelled tokens) of `model` on loader batches, computed as a training step
    computes its loss (bf16 autocast on CUDA) without a gradient. `shard`: a rank's share of a batch under
    context parallelism (the count is the whole batch's: the caller sums the CE over ranks). `head`: the
    module whose lm_head the loss uses (the unwrapped model under FSDP; default `model`)."""
    from contextlib import nullcontext

    head = model if head is None else head
    ce_sum, count = torch.zeros((), device=device), 0
    for b in batches:
        count += int((b["labels"] != IGNORE_INDEX).sum())
        b = shard(b) if shard is not None else b
        pos, cu = b.get("position_ids"), b.get("cu_seqlens")
        with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext():
            hidden = model.forward_hidden(
                b["input_ids"].to(device),
                position_ids=None if pos is None else pos.to(device),
                cu_seqlens=None if cu is None else cu.to(device),
            )
            # taken after the forward: under FSDP only then is it the whole (unsharded) matrix
            ce_sum += loss_fn(hidden, head.lm_head.weight, b["labels"].to(device)).ce_sum.float()
    return ce_sum, count
