"""Context-parallel attention: all-gather keys/values, attend with this rank's queries.

Every rank gathers every rank's (normed, rotated) keys and values, so the number of heads plays no
part in how far the sequence can be split (unlike Ulysses' all-to-all over heads). The gathered
keys stay in gathered (rank) order; the mask is computed from each key's and query's position in
the whole row, so causality, sliding windows and document boundaries are exactly those of the
single-process model. The backward of the all-gather is a reduce-scatter of dK/dV.

Backends: "math" (SDPA with a dense [B, 1, T/C, T] boolean mask; CPU and tests) and "flex"
(FlexAttention with a block mask, compiled on CUDA: fully masked blocks are skipped, so with the
zigzag layout each rank does the same work). `attention.BACKEND` (or LONGCTX_ATTN_BACKEND) = "math" or "flex"
forces one;
otherwise CUDA uses flex and the CPU math.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from longctx.distributed.collectives import all_gather
from longctx.distributed.sharding import local_index
from longctx.model import attention as single
from longctx.model.attention import allowed_positions
from longctx.model.varlen import DocLayout

_flex_compiled = None


def _backend(q: torch.Tensor) -> str:
    forced = single.forced_backend()
    if forced in ("math", "flex"):
        return forced
    return "flex" if q.is_cuda else "math"


def key_index(layout: DocLayout) -> torch.Tensor:
    """Row position of every gathered key (ranks' local tokens laid end to end, rank order)."""
    cp = layout.cp
    if "key_index" not in cp.cache:
        ctx = cp.ctx
        cp.cache["key_index"] = torch.cat(
            [local_index(cp.seq_len, r, ctx.size, ctx.layout) for r in range(ctx.size)]
        ).to(cp.index.device)
    return cp.cache["key_index"]


def dense_mask(layout: DocLayout, window: int | None) -> torch.Tensor:
    """[B or 1, 1, T/C, T] boolean mask, True where a local query may see a gathered key."""
    cp = layout.cp
    key = ("dense", window)
    if key not in cp.cache:
        qpos, kpos = cp.index, key_index(layout)
        allowed = kpos[None, :] <= qpos[:, None]
        if window is not None:
            allowed = allowed & (qpos[:, None] - kpos[None, :] < window)
        allowed = allowed[None]
        if cp.whole.doc_ids is not None:
            ids = cp.whole.doc_ids
            allowed = allowed & (ids[:, qpos, None] == ids[:, None, kpos])
        cp.cache[key] = allowed[:, None]
    return cp.cache[key]


def block_mask(layout: DocLayout, window: int | None):
    from torch.nn.attention.flex_attention import create_block_mask

    cp = layout.cp
    key = ("flex", window)
    if key not in cp.cache:
        qpos, kpos = cp.index, key_index(layout)
        ids = cp.whole.doc_ids

        def mask_mod(b, h, q_idx, kv_idx):
            return allowed_positions(b, qpos[q_idx], kpos[kv_idx], window, ids)

        device = qpos.device
        cp.cache[key] = create_block_mask(
            mask_mod,
            layout.batch if ids is not None else 1,
            None,
            len(qpos),
            len(kpos),
            device=device,
            _compile=device.type == "cuda",
        )
    return cp.cache[key]


def attend(q, k, v, layout: DocLayout, window: int | None, scale: float) -> torch.Tensor:
    """[B, T/C, H, D] local queries, [B, T/C, Hkv, D] local keys/values -> [B, T/C, H, D]."""
    global _flex_compiled
    cp = layout.cp
    B, Tl, H, D = q.shape
    Dv = v.shape[-1]
    # one collective for both; [C, B, Tl, Hkv, D + Dv] -> [B, C * Tl, Hkv, D + Dv]
    kv = all_gather(torch.cat([k, v], dim=-1), cp.ctx.group)
    kv = kv.transpose(0, 1).reshape(B, cp.ctx.size * Tl, *kv.shape[3:])
    k_all, v_all = kv.split([D, Dv], dim=-1)
    if window is not None and window >= layout.max_seqlen:
        window = None  # the window covers every document: plain causal, as attention.attend does
    qh, kh, vh = q.transpose(1, 2), k_all.transpose(1, 2), v_all.transpose(1, 2)
    gqa = H != k.shape[2]
    if _backend(q) == "math":
        out = F.scaled_dot_product_attention(
            qh, kh, vh, attn_mask=dense_mask(layout, window), scale=scale, enable_gqa=gqa
        )
    else:
        from torch.nn.attention.flex_attention import flex_attention

        if _flex_compiled is None and q.is_cuda:
            _flex_compiled = torch.compile(flex_attention, dynamic=False)
        fn = _flex_compiled if q.is_cuda else flex_attention
        out = fn(
            qh, kh.contiguous(), vh.contiguous(), block_mask=block_mask(layout, window), scale=scale, enable_gqa=gqa
        )
    return out.transpose(1, 2)
