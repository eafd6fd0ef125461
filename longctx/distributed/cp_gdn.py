"""Context-parallel Gated DeltaNet: short convs and the recurrence across rank boundaries.

Short conv (width W): a segment's first W-1 outputs read the previous segment's last W-1
inputs. Every rank all-gathers the tails of its segments (tiny) and prepends the predecessor's
tail to each of its segments; document boundaries still cut the window (global doc positions).

Recurrence: per head the gated delta rule maps the state before a segment S0 to the state after it
affinely, S_end = P S0 + S_loc (P = prod_t exp(g_t)(I - beta_t k_t k_t^T), a K x K matrix), and
each output likewise, o_t = (q_t^T P_t) S0 + o_loc_t. So every rank runs its segments once with
an augmented state [P | S] started at [I | 0] (values padded with K zero columns), which yields
o_loc, the K-wide "o_X_t = q_t^T P_t" and the segment's (P, S_loc) in one pass. The (P, S_loc) of
all segments are all-gathered (C x 2 x H x K x (K+V) numbers per row), every rank folds them in
sequence order to get the state entering each of its segments, and adds o_X S0 to its outputs.
Nothing waits on another rank's recurrence, and any order of segments over ranks works, so GDN
follows the zigzag layout attention wants at no cost (its work per token is the same everywhere).
A document that starts inside a segment cuts the chain there: P of that segment is 0.

Collectives inside autograd must run in the same order on every rank, also in the backward,
where the engine's order depends on each rank's graph (which differs: documents cut segments
differently). Per GDN layer there are two gathers and the halo one always comes second in the
backward (the k/v gradients it needs flow through the state exchange); every rank uses both
gathered tensors, so every rank runs both backwards. Attention has one gather per layer.

On CUDA with fla installed the same is done by fla's own context-parallel kernels
(`fla.ops.cp.build_cp_context`, `causal_conv1d_cp`, `chunk_gated_delta_rule(cp_context=...)`),
one row at a time, with the same zigzag/contiguous layout. Set LONGCTX_CP_GDN=torch to use the
torch path there too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from longctx import env
from longctx.distributed.collectives import all_gather
from longctx.distributed.sharding import segment_owner
from longctx.model.gdn import causal_conv_ref, chunk_delta_rule_ref, l2norm
from longctx.model.varlen import DocLayout


def _use_fla_cp(fla: bool) -> bool:
    if not fla or env.get("LONGCTX_CP_GDN") == "torch":
        return False
    try:
        import fla.ops.cp  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- short conv


def short_convs(inputs, convs, layout: DocLayout, *, fla: bool) -> list[torch.Tensor]:
    """Causal depthwise conv + SiLU of this rank's [B, T/C, C_i] inputs, seeing across segments.

    The q, k and v convs run as one conv over their concatenated channels, so the layer has one
    halo exchange whose backward comes after the state exchange's on every rank (see module doc).
    """
    x = torch.cat(inputs, -1)
    weight = torch.cat([c.weight for c in convs], 0)  # depthwise: [sum C_i, 1, W]
    y = _conv_fla(x, weight, layout) if _use_fla_cp(fla) else _conv_torch(x, weight, layout)
    return list(y.split([t.shape[-1] for t in inputs], -1))


def _conv_torch(x: torch.Tensor, weight: torch.Tensor, layout: DocLayout) -> torch.Tensor:
    cp = layout.cp
    W = weight.shape[-1]
    B, Tl, Cd = x.shape
    nseg, L = len(cp.segments), cp.seg_len
    if W == 1:
        return causal_conv_ref(x, weight, layout.doc_pos)
    if L < W - 1:
        raise ValueError(f"context-parallel segments of {L} tokens are shorter than the conv's reach ({W - 1})")
    segs = x.view(B, nseg, L, Cd)
    tails = all_gather(segs[:, :, L - (W - 1) :], cp.ctx.group)  # [C, B, nseg, W-1, Cd]
    halos = []
    for s in cp.segments:
        if s == 0:
            # the row's start: zero padding as in one process, but tied to `tails` so that this
            # rank also runs the gather's backward (a collective every rank must join)
            halos.append(tails[0, :, 0] * 0)
        else:
            rank, i = segment_owner(s - 1, cp.ctx.size, cp.ctx.layout)
            halos.append(tails[rank, :, i])
    ext = torch.cat([torch.stack(halos, 1), segs], dim=2).view(B * nseg, W - 1 + L, Cd)
    doc_pos = None
    if layout.doc_pos is not None:
        # the taps of an output token are cut by its own document position; halo outputs are dropped
        doc_pos = F.pad(layout.doc_pos.view(B, nseg, L), (W - 1, 0)).view(B * nseg, W - 1 + L)
    y = causal_conv_ref(ext, weight, doc_pos)[:, W - 1 :]
    return y.reshape(B, Tl, Cd)


# ---------------------------------------------------------------- the recurrence


def _pieces(layout: DocLayout, row: int, i: int) -> list[tuple[int, int, bool]]:
    """(start, end, continues) in local positions of the row for local segment i, split at
    documents; `continues` marks a first piece whose document began in an earlier segment."""
    cp = layout.cp
    s, L = cp.segments[i], cp.seg_len
    lo, hi = s * L, (s + 1) * L
    bounds = cp.row_bounds(row)
    cuts = [lo] + [b for b in bounds if lo < b < hi] + [hi]
    starts_doc = lo in bounds
    off = i * L - lo  # row position -> local position
    return [
        (a + off, b + off, j == 0 and not starts_doc) for j, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))
    ]


def gated_delta_rule(q, k, v, g, beta, scale: float, layout: DocLayout, *, fla: bool) -> torch.Tensor:
    """[B, T/C, HK, K] q/k (conv outputs), [B, T/C, HV, V] v, [B, T/C, HV] g/beta -> [B, T/C, HV, V]."""
    if _use_fla_cp(fla):
        return _delta_rule_fla(q, k, v, g, beta, scale, layout)
    cp = layout.cp
    dtype = v.dtype
    B, Tl, HK, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    if HV != HK:
        q, k = (x.repeat_interleave(HV // HK, dim=2) for x in (q, k))
    q, k, v, g, beta = (x.float().transpose(1, 2) for x in (q, k, v, g, beta))  # heads first
    q, k = l2norm(q) * scale, l2norm(k)
    H = HV
    start_aug = torch.cat([torch.eye(K, device=q.device).expand(1, H, K, K), q.new_zeros(1, H, K, V)], -1)

    rows, transitions, pending = [], [], []
    for b in range(B):
        outs = []
        for i in range(len(cp.segments)):
            pieces = _pieces(layout, b, i)
            for a, e, continues in pieces:
                last = (a, e, continues) == pieces[-1]
                args = [x[b : b + 1, :, a:e] for x in (q, k, v, g, beta)]
                if continues:
                    n = e - a
                    args[2] = torch.cat([q.new_zeros(1, H, n, K), args[2]], -1)
                    o, state = chunk_delta_rule_ref(*args, initial_state=start_aug, output_final_state=True)
                    # o = o_X S0 + o_Y once S0 is known (after the exchange)
                    pending.append((b, i, len(outs)))
                    outs.append(o)
                    if last:
                        transitions.append(state[0])
                else:
                    o, state = chunk_delta_rule_ref(*args, output_final_state=True)
                    outs.append(o)
                    if last:  # a document starts in this segment: its end does not depend on S0
                        transitions.append(torch.cat([q.new_zeros(H, K, K), state[0]], -1))
        rows.append(outs)

    # [B, nseg, H, K, K+V] -> every rank's, then the state entering each segment, in order
    local = torch.stack(transitions).view(B, len(cp.segments), H, K, K + V)
    gathered = all_gather(local, cp.ctx.group)  # [C, B, nseg, H, K, K+V]
    entering, state = {}, q.new_zeros(B, H, K, V)
    for s in range(max(cp.segments)):
        rank, i = segment_owner(s, cp.ctx.size, cp.ctx.layout)
        P, S = gathered[rank, :, i].split([K, V], -1)
        state = P @ state + S
        entering[s + 1] = state
    for b, i, j in pending:
        o = rows[b][j]
        S0 = entering[cp.segments[i]][b : b + 1]
        rows[b][j] = o[..., K:] + o[..., :K] @ S0
    out = torch.stack([torch.cat(outs, 2)[0] for outs in rows])  # [B, H, Tl, V]
    if not pending:  # nothing here continues a document, but the gather's backward must run here too
        out = out + gathered.flatten()[0] * 0
    return out.transpose(1, 2).to(dtype)


# ---------------------------------------------------------------- fla (CUDA)


def _fla_context(layout: DocLayout, row: int, width: int | None):
    from fla.ops.cp import build_cp_context

    cp = layout.cp
    key = ("fla_cp", row, width)
    if key not in cp.cache:
        cu_cpu = torch.tensor(cp.row_bounds(row), dtype=torch.long)
        cp.cache[key] = build_cp_context(
            cu_cpu.to(cp.index.device),
            group=cp.ctx.group,
            conv1d_kernel_size=width,
            cu_seqlens_cpu=cu_cpu,
            layout=cp.ctx.layout,
        )
    return cp.cache[key]


def _conv_fla(x, weight, layout: DocLayout):
    from fla.modules.causal_conv1d.cp import causal_conv1d_cp

    width = weight.shape[-1]
    rows = [
        causal_conv1d_cp(
            x[b : b + 1], weight=weight.squeeze(1), activation="silu", cp_context=_fla_context(layout, b, width)
        )
        for b in range(x.shape[0])
    ]
    return torch.cat(rows, 0)


def _delta_rule_fla(q, k, v, g, beta, scale, layout: DocLayout):
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    rows = []
    for b in range(q.shape[0]):
        ctx = _fla_context(layout, b, None)
        o, _ = chunk_gated_delta_rule(
            *(x[b : b + 1] for x in (q, k, v, g, beta)), scale=scale, use_qk_l2norm_in_kernel=True, cp_context=ctx
        )
        rows.append(o)
    return torch.cat(rows, 0)
