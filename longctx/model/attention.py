"""Softmax attention layer (Olmo 3 / Olmo Hybrid) and the kernel that runs it.

The layer: q/k/v projections, RMSNorm over the full q and k widths (before splitting into
heads, as OLMo does), RoPE if the layer has any, causal attention, output projection.

`attend` picks a backend per call (`select_backend`), small so the speed work can swap it:
- "flash": flash-attn 2 (`flash_attn_varlen_func` for packed documents), CUDA, fp16/bf16.
- "sdpa":  torch SDPA with is_causal (cuDNN / flash kernels), CUDA, one document per row and
           no active sliding window.
- "flex":  FlexAttention (compiled) with a block mask for documents and/or a sliding window,
           CUDA, training, where varlen cannot serve (torch < 2.11, fp32, head dim > 256, or
           LONGCTX_VARLEN_ATTENTION=0): one mask serves both packing and sliding windows and skips fully
           masked blocks, and training shapes are fixed.
- "sdpa_docs": SDPA one document at a time (a sliding window as blocks of queries against the
           keys they can see), CUDA without autograd (prefill, probes, eval). Inference lengths
           change every call: compiled flex would recompile for each, and past torch's recompile
           limit it runs eagerly, materialising the full score matrix.
- "fla":   fla's `parallel_attn` (Triton, forward and backward; packed documents through
           cu_seqlens; a sliding window skips the key blocks outside it), CUDA. The training default
           for sliding windows in bf16/fp16 when fla is installed: flex's first compile of a
           windowed 16k step took minutes, fla's ran transformer-1b at 16k and 64k (docs/benchmarks.md,
           transformer-1b training). Packed documents without a window take varlen (fla there is unmeasured).
- "varlen": torch's own flash-attention 2 through `torch.nn.attention.varlen.varlen_attn` (torch >= 2.11:
           packed documents through cu_seqlens, a sliding window as flash's window_size, autograd), CUDA,
           fp16/bf16: what "flash" does, without the flash-attn package and without flex's compile.
           The training default where flex would serve (packed documents; a sliding window without fla): on
           an H100 it matched flex on packed documents (59,990 against 60,429 tok/s, hybrid-1b at 16k) and its
           cell took 17 s of a lane where flex's compile took 191 s. LONGCTX_VARLEN_ATTENTION=1 also takes it
           where fla or sdpa_docs would serve (+3% over fla on transformer-1b's windows at 16k; inference
           unmeasured), 0 never; LONGCTX_ATTN_BACKEND=varlen everywhere.
- "math":  SDPA with an explicit boolean [B, 1, T, T] mask; the CPU path (tests, tiny models) with
           autograd (without it, packed or windowed attention on the CPU takes "sdpa_docs").
Set `attention.BACKEND` (or env LONGCTX_ATTN_BACKEND, read at each call) to force one.

Sliding windows follow transformers: query i sees key j iff i - window < j <= i.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

import rope_methods
from longctx import env
from longctx.env import ATTN_BACKENDS
from longctx.model import optional, rope_kernel
from longctx.model.norms import RMSNorm
from longctx.model.varlen import DocLayout

BACKENDS = ATTN_BACKENDS
QUERY_BLOCK = 4096  # sdpa_docs: queries per SDPA call under a sliding window (at least the window)
BACKEND: str | None = None  # forces one backend; None: LONGCTX_ATTN_BACKEND, else picked per call

_flex_compiled = None


def _flash_fns():
    """(flash_attn_func, flash_attn_varlen_func), or False if flash-attn is not installed."""
    return optional.load("flash_attn:flash_attn_func", "flash_attn:flash_attn_varlen_func")


def forced_backend() -> str | None:
    """The backend forced by attention.BACKEND or, when that is None, LONGCTX_ATTN_BACKEND as it is now."""
    return BACKEND if BACKEND is not None else env.peek("LONGCTX_ATTN_BACKEND")


def select_backend(q: torch.Tensor, layout: DocLayout, window: int | None) -> str:
    forced = forced_backend()
    if forced is not None:
        if forced not in BACKENDS:
            raise ValueError(f"attention backend {forced!r} unknown; accepted: {', '.join(BACKENDS)}")
        return forced
    inference = not torch.is_grad_enabled()
    if not q.is_cuda:  # the dense mask is T x T (4 GiB at 64k): without autograd, no mask at all
        if not inference:
            return "math"
        return "sdpa_docs" if layout.packed or window is not None else "sdpa"
    half = q.dtype in (torch.float16, torch.bfloat16)
    flash_shape = half and q.shape[-1] <= 256  # what flash-attention's kernels (flash, varlen) take
    if flash_shape and _flash_fns():
        return "flash"
    if not layout.packed and window is None:
        return "sdpa"
    switch = env.varlen_attention()  # True / False / None (auto)
    varlen = switch is not False and flash_shape and bool(varlen_fn())
    if switch and varlen:
        return "varlen"  # LONGCTX_VARLEN_ATTENTION=1: what flash does, from torch itself, training and inference
    if inference:
        return "sdpa_docs"
    if window is not None and half and _fla_attn():
        return "fla"  # transformer-1b trains at 16k/64k through it; flex's windowed compile did not finish
    if varlen:
        return "varlen"  # auto: flex's speed on packed documents without its compile (docs/benchmarks.md)
    return "flex"


def varlen_fn():
    """(torch's varlen_attn,), or False before torch 2.11."""
    return optional.load("torch.nn.attention.varlen:varlen_attn")


def _fla_attn():
    return optional.load("fla.ops.attn:parallel_attn")


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: DocLayout, window: int | None, scale: float
) -> torch.Tensor:
    """Causal attention over [B, T, H, D] q and [B, T, Hkv, D] k/v; returns [B, T, H, D]."""
    if layout.cp is not None:  # context parallel: this rank's queries against every rank's keys
        return layout.cp.attend(q, k, v, layout, window, scale)
    if window is not None and window >= layout.max_seqlen:
        window = None  # the window covers every document: plain causal
    backend = select_backend(q, layout, window)
    return _BACKEND_FNS[backend](q, k, v, layout, window, scale)


def _flash_attend(q, k, v, layout, window, scale):
    flash_func, flash_varlen = _flash_fns()
    window_size = (window - 1, 0) if window is not None else (-1, -1)
    if not layout.packed:
        return flash_func(q, k, v, softmax_scale=scale, causal=True, window_size=window_size)
    B, T = q.shape[:2]
    out = flash_varlen(
        q.reshape(B * T, *q.shape[2:]),
        k.reshape(B * T, *k.shape[2:]),
        v.reshape(B * T, *v.shape[2:]),
        cu_seqlens_q=layout.cu_seqlens,
        cu_seqlens_k=layout.cu_seqlens,
        max_seqlen_q=layout.max_seqlen,
        max_seqlen_k=layout.max_seqlen,
        softmax_scale=scale,
        causal=True,
        window_size=window_size,
    )
    return out.view(q.shape)


def _sdpa_attend(q, k, v, layout, window, scale):
    if layout.packed or window is not None:
        raise ValueError("the 'sdpa' attention backend handles neither packed documents nor sliding windows")
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        is_causal=True,
        scale=scale,
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return out.transpose(1, 2)


def _sdpa_docs_attend(q, k, v, layout, window, scale):
    B, T = q.shape[:2]
    bounds = layout.bounds if layout.packed else list(range(0, B * T + 1, T))
    q, k, v = (x.reshape(B * T, *x.shape[2:]).transpose(0, 1)[None] for x in (q, k, v))  # [1, H, B*T, D]
    out = torch.empty_like(q)
    gqa = q.shape[1] != k.shape[1]
    for a, e in zip(bounds[:-1], bounds[1:], strict=True):
        if window is None or window >= e - a:
            out[..., a:e, :] = F.scaled_dot_product_attention(
                q[..., a:e, :], k[..., a:e, :], v[..., a:e, :], is_causal=True, scale=scale, enable_gqa=gqa
            )
            continue
        _window_blocks(q[..., a:e, :], k[..., a:e, :], v[..., a:e, :], 0, 0, window, scale, out=out[..., a:e, :])
    return out[0].transpose(0, 1).reshape(B, T, out.shape[1], out.shape[-1])


def _window_blocks(q, k, v, q0: int, k0: int, window: int, scale: float, out=None) -> torch.Tensor:
    """Causal attention under a sliding window, [1, H, n, D] queries at positions q0.. against [1, Hkv, L, D]
    keys at positions k0.. (k0 <= q0, the last key at the last query's position), in blocks of queries, each
    against the keys it can see with a mask from the one rule (as flex and math use it); written into `out`
    (a view of the caller's output) when given."""
    out, n = torch.empty_like(q) if out is None else out, q.shape[2]
    block = max(window, QUERY_BLOCK)
    for s in range(0, n, block):  # queries s..t-1 (positions q0 + s ..) see keys from q0 + s - window + 1
        t = min(s + block, n)
        first = max(k0, q0 + s - window + 1)
        qi = torch.arange(q0 + s, q0 + t, device=q.device)[:, None]
        kj = torch.arange(first, q0 + t, device=q.device)[None]
        mask = allowed_positions(None, qi, kj, window, None)
        keys = slice(first - k0, q0 + t - k0)
        out[..., s:t, :] = F.scaled_dot_product_attention(
            q[..., s:t, :], k[..., keys, :], v[..., keys, :], attn_mask=mask, scale=scale,
            enable_gqa=q.shape[1] != k.shape[1],
        )  # fmt: skip
    return out


def attend_after_cache(q, k, v, cache, window: int | None, scale: float) -> torch.Tensor:
    """Prefill attention of a packed row ([1, T, H, D] q, [1, T, Hkv, D] k/v) whose documents go on from
    their sequences' caches: document i holds positions starts[i].. of sequence rows[i] and sees, besides
    its own keys, the cached keys before starts[i] (those the window reaches). SDPA per document, causal
    aligned to the last key (torch's causal_lower_right: no mask in memory), or under a sliding window in
    blocks of queries with a mask from the one rule on absolute positions."""
    from torch.nn.attention.bias import causal_lower_right

    store, out = cache.store, torch.empty_like(q)
    slots, gqa = store.k.shape[1], q.shape[2] != k.shape[2]
    for i, (a, b), s0 in zip(cache.row_list, cache.docs, cache.starts, strict=True):
        lo = max(0, s0 - slots) if window is None else max(0, s0 - slots, s0 - window + 1)
        held = torch.arange(lo, s0, device=q.device) % slots  # the ring's slots of positions lo .. s0-1
        keys = torch.cat([store.k[i, held].to(k.dtype), k[0, a:b]])[None].transpose(1, 2)  # [1, Hkv, L, D]
        values = torch.cat([store.v[i, held].to(v.dtype), v[0, a:b]])[None].transpose(1, 2)
        queries = q[:, a:b].transpose(1, 2)
        n, L = b - a, keys.shape[2]
        if window is None or window >= s0 + n:
            o = F.scaled_dot_product_attention(
                queries, keys, values, attn_mask=causal_lower_right(n, L), scale=scale, enable_gqa=gqa
            )
        else:
            o = _window_blocks(queries, keys, values, s0, lo, window, scale)
        out[:, a:b] = o.transpose(1, 2)
    return out


def dense_mask(layout: DocLayout, window: int | None, device: torch.device) -> torch.Tensor:
    """Boolean [B or 1, 1, T, T] mask, True where attention is allowed."""
    key = ("dense", window, device)
    if key not in layout.cache:
        pos = torch.arange(layout.seqlen, device=device)
        allowed = pos[None, :] <= pos[:, None]
        if window is not None:
            allowed = allowed & (pos[:, None] - pos[None, :] < window)
        allowed = allowed[None]
        if layout.doc_ids is not None:
            ids = layout.doc_ids.to(device)
            allowed = allowed & (ids[:, :, None] == ids[:, None, :])
        layout.cache[key] = allowed[:, None]
    return layout.cache[key]


def _math_attend(q, k, v, layout, window, scale):
    mask = dense_mask(layout, window, q.device)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=mask,
        scale=scale,
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return out.transpose(1, 2)


def allowed_positions(b, q_pos, k_pos, window: int | None, doc_ids: torch.Tensor | None):
    """The one attention rule (causal, sliding window, same document) on absolute token positions.

    FlexAttention mask_mods call it with index tensors; context parallelism maps its local
    indices to global positions first.
    """
    allowed = k_pos <= q_pos
    if window is not None:
        allowed = allowed & (q_pos - k_pos < window)
    if doc_ids is not None:
        allowed = allowed & (doc_ids[b, q_pos] == doc_ids[b, k_pos])
    return allowed


def _block_mask(layout: DocLayout, window: int | None, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    key = ("flex", window, device)
    if key not in layout.cache:
        doc_ids = layout.doc_ids.to(device) if layout.doc_ids is not None else None

        def mask_mod(b, h, q_idx, kv_idx):
            return allowed_positions(b, q_idx, kv_idx, window, doc_ids)

        batch = layout.batch if doc_ids is not None else 1
        # _compile: evaluate the mask block by block; eagerly it materialises [B, T, T] (and a
        # gathered int32 copy of it), 28 GiB extra at 64k tokens
        layout.cache[key] = create_block_mask(
            mask_mod, batch, None, layout.seqlen, layout.seqlen, device=device, _compile=device.type == "cuda"
        )
    return layout.cache[key]


def _flex_attend(q, k, v, layout, window, scale):
    global _flex_compiled
    from torch.nn.attention.flex_attention import flex_attention

    if _flex_compiled is None:
        # eager flex_attention materialises the full score matrix; compiled it is a fused kernel
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    fn = _flex_compiled if q.is_cuda else flex_attention
    out = fn(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        block_mask=_block_mask(layout, window, q.device),
        scale=scale,
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return out.transpose(1, 2)


def _varlen_attend(q, k, v, layout, window, scale):
    try:
        from torch.nn.attention.varlen import varlen_attn  # looked up at each call (tests replace it)
    except ImportError:
        raise RuntimeError("attention backend 'varlen' needs torch >= 2.11 (torch.nn.attention.varlen)") from None
    B, T = q.shape[:2]
    if layout.packed:
        cu, longest = layout.cu_seqlens, layout.max_seqlen
    else:  # one document per row
        cu, longest = torch.arange(0, B * T + 1, T, dtype=torch.int32, device=q.device), T
    extra = {}
    if q.shape[2] != k.shape[2] and "enable_gqa" in inspect.signature(varlen_attn).parameters:
        extra["enable_gqa"] = True  # torch 2.11's wrapper has no such flag; its kernel takes fewer kv heads as is
    out = varlen_attn(
        *(x.reshape(B * T, *x.shape[2:]) for x in (q, k, v)),
        cu,
        cu,
        longest,
        longest,
        scale=scale,
        window_size=(-1, 0) if window is None else (window - 1, 0),  # keys i - window + 1 .. i
        **extra,
    )
    return out.view(B, T, *out.shape[1:])


def _fla_attend(q, k, v, layout, window, scale):
    found = _fla_attn()
    if not found:
        raise RuntimeError("attention backend 'fla' needs flash-linear-attention (pip install flash-linear-attention)")
    parallel_attn = found[0]  # keys of query i: [i - window_size + 1, i] within its document, as ours
    if not layout.packed:
        return parallel_attn(q, k, v, scale=scale, window_size=window)
    B, T = q.shape[:2]
    q, k, v = (x.reshape(1, B * T, *x.shape[2:]) for x in (q, k, v))
    out = parallel_attn(q, k, v, scale=scale, window_size=window, cu_seqlens=layout.fla_cu_seqlens()[0])
    return out.view(B, T, *out.shape[2:])


_BACKEND_FNS = {
    "flash": _flash_attend,
    "sdpa": _sdpa_attend,
    "sdpa_docs": _sdpa_docs_attend,
    "flex": _flex_attend,
    "fla": _fla_attend,
    "varlen": _varlen_attend,
    "math": _math_attend,
}


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class Attention(nn.Module):
    """Olmo 3 / Olmo Hybrid self-attention; parameter names as in transformers (`self_attn.*`)."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.layer_type = config.layer_types[layer_idx]
        self.head_dim = head_dim_of(config)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads or config.num_attention_heads
        self.window = config.sliding_window if self.layer_type == "sliding_attention" else None
        self.scale = self.head_dim**-0.5
        bias = bool(getattr(config, "attention_bias", False))
        d, q_dim, kv_dim = config.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d, q_dim, bias=bias)
        self.k_proj = nn.Linear(d, kv_dim, bias=bias)
        self.v_proj = nn.Linear(d, kv_dim, bias=bias)
        self.o_proj = nn.Linear(q_dim, d, bias=bias)
        # OLMo normalises q and k across all heads at once, not per head
        self.q_norm = RMSNorm(q_dim, eps=config.rms_norm_eps)
        self.k_norm = RMSNorm(kv_dim, eps=config.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, layout: DocLayout, cache=None
    ) -> torch.Tensor:
        """cache (longctx.model.cache.LayerCache): a prefill also stores each document's newest keys and
        values; a decode step (one token per sequence) attends over the cache after adding its own."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x, rope)
        if cache is not None and cache.decoding:
            out = self._step(q, k, v, cache.store, cache.positions)
        elif cache is not None and cache.continues:
            out = attend_after_cache(q, k, v, cache, self.window, self.scale)
            self._store(cache, k, v)
        else:
            out = attend(q, k, v, layout, self.window, self.scale)
            if cache is not None:
                self._store(cache, k, v)
        return self.o_proj(out.reshape(B, T, -1))

    @staticmethod
    def _store(cache, k: torch.Tensor, v: torch.Tensor) -> None:
        """A prefilled row [1, T, .]: each document's newest `slots` keys and values, slot = position % slots
        (a sliding layer's ring has `window` slots, exactly what a query can see)."""
        store = cache.store
        slots = store.k.shape[1]
        starts = cache.starts or [0] * len(cache.docs)
        for i, (a, b), s0 in zip(cache.row_list, cache.docs, starts, strict=True):
            keep = torch.arange(max(a, b - slots), b, device=k.device)
            pos = keep - a + s0
            store.k[i, pos % slots] = k[0, keep].to(store.k.dtype)
            store.v[i, pos % slots] = v[0, keep].to(store.v.dtype)
            store.pos[i, pos % slots] = pos

    def _step(self, q, k, v, store, positions: torch.Tensor) -> torch.Tensor:
        """One token per sequence: q [N, 1, H, D], k/v [N, 1, Hkv, D] -> [N, 1, H, D]; advances the cache."""
        store.write(k[:, 0], v[:, 0], positions)
        # after this write a sliding layer's ring holds exactly positions p - window < j <= p,
        # so only the empty slots need masking
        allowed = store.pos >= 0
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            store.k.transpose(1, 2),
            store.v.transpose(1, 2),
            attn_mask=allowed[:, None, None, :],
            scale=self.scale,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
        return out.transpose(1, 2)

    def qkv(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None):
        """q [B, T, H, D], k/v [B, T, Hkv, D]: projections, full-width QK-norm, RoPE (if any)."""
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x)).view(B, T, self.num_heads, self.head_dim)
        k = self.k_norm(self.k_proj(x)).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if rope is not None and rope_kernel.applies(q, rope[0]):
            q, k = rope_kernel.rotate(q, k, *rope)
        elif rope is not None:
            q, k = rope_methods.apply_rotary(q, k, *rope, unsqueeze_dim=2)
        return q, k, v
