"""Gated DeltaNet layer of Olmo Hybrid, with fla kernels on CUDA and a torch reference elsewhere.

Per token t and value head h (state S is [K, V], starts at zero in every document):
    S_t = exp(g_t) S_{t-1} + k_t (beta_t (v_t - exp(g_t) S_{t-1}^T k_t))^T,   o_t = S_t^T q_t
with q, k the short-conv (SiLU) outputs, L2-normalised, q scaled by K**-0.5;
beta = sigmoid(b_proj x) (times 2 with allow_neg_eigval), g = -exp(A_log) softplus(a_proj x + dt_bias).
The output is RMSNorm(o) * silu(g_proj x) per head, then o_proj.
With more value heads than key heads, key head i serves value heads i*r .. i*r+r-1 (r = HV/HK).

Parameter names are those of the Hub checkpoint and of transformers' saved files
(`linear_attn.q_conv1d` etc.), so a state dict saves and loads without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from longctx import env
from longctx.env import GDN_BACKENDS
from longctx.model import optional
from longctx.model.hostcopy import device_tensor
from longctx.model.norms import GatedRMSNorm
from longctx.model.varlen import DocLayout

# Global default; HybridLM(config, gdn_backend=...) or a layer's .backend overrides it.
BACKEND: str | None = None


def default_backend() -> str | None:
    """gdn.BACKEND or, when that is None, LONGCTX_GDN_BACKEND as it is now (None: fla on CUDA when installed)."""
    return BACKEND if BACKEND is not None else env.peek("LONGCTX_GDN_BACKEND")


FLA_SPECS = (
    "fla.ops.gated_delta_rule:chunk_gated_delta_rule",
    "fla.modules.causal_conv1d:causal_conv1d",
    "fla.modules.norm.fused_norm_gate:rms_norm_gated",
)


def fla_ops():
    """(chunk_gated_delta_rule, causal_conv1d, rms_norm_gated) from fla, or False if not installed."""
    return optional.load(*FLA_SPECS)


def takes_fla(is_cuda: bool, backend: str | None = None, warn: bool = True) -> bool:
    """Whether a GDN layer on CUDA (is_cuda) or the CPU runs fla's kernels: `backend` (the layer's, else
    gdn.BACKEND / LONGCTX_GDN_BACKEND) may force fla (an error where it cannot run) or torch; on CUDA without
    fla the PyTorch reference runs, said once on stderr (warn)."""
    backend = backend or default_backend()
    if backend == "torch":
        return False
    available = is_cuda and bool(fla_ops())
    if backend == "fla" and not available:
        raise RuntimeError("gdn backend 'fla' needs CUDA tensors and the flash-linear-attention package")
    if warn and is_cuda and not available:
        optional.warn_once(
            "gdn-fla",
            f"the Gated DeltaNet layers run their PyTorch reference on CUDA, many times slower than fla's "
            f"kernels ({optional.why_missing(*FLA_SPECS)}; pip install 'longctx[gpu]'; "
            "LONGCTX_GDN_BACKEND=torch chooses the reference without this warning)",
        )
    return available


# ---------------------------------------------------------------- torch reference


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    # fla's convention: eps inside the square root of the sum of squares
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def causal_conv_ref(x: torch.Tensor, weight: torch.Tensor, doc_pos: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv + SiLU over [B, T, C] with a [C, 1, W] weight.

    Written as W shifted copies so that a document boundary can cut the window: the tap that
    reaches j tokens back is dropped where the token sits fewer than j tokens into its document.
    """
    T, W = x.shape[1], weight.shape[-1]
    xw = x.to(weight.dtype)
    padded = F.pad(xw, (0, 0, W - 1, 0))
    out = torch.zeros_like(xw)
    for j in range(W):
        shifted = padded[:, W - 1 - j : W - 1 - j + T]
        if doc_pos is not None and j > 0:
            shifted = shifted * (doc_pos >= j).unsqueeze(-1).to(shifted.dtype)
        out = out + shifted * weight[:, 0, W - 1 - j]
    return F.silu(out).to(x.dtype)


def chunk_delta_rule_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    chunk: int = 64,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Gated delta rule over [B, H, T, K] q/k (normalised, q scaled), [B, H, T, V] v, [B, H, T] g/beta.

    initial_state: [B, H, K, V] state before the first token (default zero); with
    output_final_state the state after the last token is returned too, as (out, state).

    Chunked form, float32. Inside a chunk with inclusive log-decay cumsum c and start state S0,
    the per-token corrections u (what gets written to the state) solve
        (I + A) u = beta v - beta exp(c) k S0,   A[t, s] = beta_t exp(c_t - c_s) k_t.k_s  (s < t)
    and then  o_t = exp(c_t) q_t S0 + sum_{s<=t} exp(c_t - c_s) (q_t.k_s) u_s,
    S_end = exp(c_last) S0 + sum_s exp(c_last - c_s) k_s u_s^T.
    """
    B, H, T, K = k.shape
    V = v.shape[-1]
    pad = (-T) % chunk
    if pad:  # zero k, v and beta at the tail change nothing before it
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = (F.pad(x, (0, pad)) for x in (g, beta))
    n = (T + pad) // chunk
    q, k, v = (x.reshape(B, H, n, chunk, x.shape[-1]) for x in (q, k, v))
    g, beta = (x.reshape(B, H, n, chunk) for x in (g, beta))

    c = g.cumsum(-1)
    future = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).triu(1)
    # exp(c_t - c_s) for s <= t, zero above the diagonal (masked before exp: no overflow)
    decay = (c.unsqueeze(-1) - c.unsqueeze(-2)).masked_fill(future, float("-inf")).exp()
    kb = k * beta.unsqueeze(-1)
    A = (kb @ k.transpose(-1, -2)) * decay  # its diagonal is ignored: unitriangular solve
    u_v = torch.linalg.solve_triangular(A, v * beta.unsqueeze(-1), upper=False, unitriangular=True)
    u_k = torch.linalg.solve_triangular(A, kb * c.exp().unsqueeze(-1), upper=False, unitriangular=True)
    qk = (q @ k.transpose(-1, -2)) * decay
    q_decayed = q * c.exp().unsqueeze(-1)
    k_to_end = k * (c[..., -1:] - c).exp().unsqueeze(-1)
    chunk_decay = c[..., -1].exp()[..., None, None]

    state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(q.dtype)
    outs = []
    for i in range(n):
        u = u_v[:, :, i] - u_k[:, :, i] @ state
        outs.append(q_decayed[:, :, i] @ state + qk[:, :, i] @ u)
        state = state * chunk_decay[:, :, i] + k_to_end[:, :, i].transpose(-1, -2) @ u
    out = torch.stack(outs, 2).reshape(B, H, n * chunk, V)[:, :, :T]
    # the zero-padded tail (g = 0, k = 0) leaves the state as the last real token left it
    return (out, state) if output_final_state else out


def heads_first(q, k, v, g, beta, scale: float):
    """[B, T, HK, K] q/k, [B, T, HV, V] v, [B, T, HV] g/beta -> float32 [B, HV, T, .], what the
    recurrence takes: key heads repeated over their value heads, q and k L2-normalised, q scaled."""
    HK, HV = q.shape[2], v.shape[2]
    if HV != HK:
        q, k = (x.repeat_interleave(HV // HK, dim=2) for x in (q, k))
    q, k, v, g, beta = (x.float().transpose(1, 2) for x in (q, k, v, g, beta))
    return l2norm(q) * scale, l2norm(k), v, g, beta


def gated_delta_rule_ref(
    q, k, v, g, beta, scale: float, layout: DocLayout, final_state: bool = False, initial_state=None
):
    """[B, T, HK, K] q/k (raw conv outputs), [B, T, HV, V] v, [B, T, HV] g/beta -> [B, T, HV, V];
    with final_state also the state after each document (each row when unpacked), [N, HV, K, V]
    float32, as (o, state) — what fla's kernel returns.

    With packed documents the flat sequence is cut at each boundary and each document runs from
    a zero state, or from initial_state[i] ([N, HV, K, V], one per document), which is exactly what
    the varlen kernel computes.
    """
    dtype = v.dtype
    B, T = q.shape[:2]
    q, k, v, g, beta = heads_first(q, k, v, g, beta, scale)
    if not layout.packed:
        out, state = chunk_delta_rule_ref(q, k, v, g, beta, initial_state=initial_state, output_final_state=True)
    else:
        # [B, H, T, ...] -> [1, H, B*T, ...]: rows laid end to end, as cu_seqlens counts them
        flat = [x.transpose(0, 1).flatten(1, 2).unsqueeze(0) for x in (q, k, v, g, beta)]
        pieces = [
            chunk_delta_rule_ref(
                *(x[:, :, a:b] for x in flat),
                initial_state=None if initial_state is None else initial_state[i : i + 1],
                output_final_state=True,
            )
            for i, (a, b) in enumerate(zip(layout.bounds[:-1], layout.bounds[1:], strict=True))
        ]
        out = torch.cat([o for o, _ in pieces], 2)[0].unflatten(1, (B, T)).transpose(0, 1)
        state = torch.cat([s for _, s in pieces])
    out = out.transpose(1, 2).to(dtype)
    return (out, state) if final_state else out


# ---------------------------------------------------------------- the layer


class GatedDeltaNet(nn.Module):
    def __init__(self, config, layer_idx: int, backend: str | None = None):
        super().__init__()
        if backend is not None and backend not in GDN_BACKENDS:
            raise ValueError(f"gdn backend {backend!r} unknown; accepted: {', '.join(GDN_BACKENDS)}")
        self.layer_idx = layer_idx
        self.backend = backend
        d = config.hidden_size
        self.num_k_heads = config.linear_num_key_heads
        self.num_v_heads = config.linear_num_value_heads
        self.head_k_dim = config.linear_key_head_dim
        self.head_v_dim = config.linear_value_head_dim
        self.allow_neg_eigval = bool(config.linear_allow_neg_eigval)
        key_dim, value_dim = self.num_k_heads * self.head_k_dim, self.num_v_heads * self.head_v_dim
        width = config.linear_conv_kernel_dim

        self.q_proj = nn.Linear(d, key_dim, bias=False)
        self.k_proj = nn.Linear(d, key_dim, bias=False)
        self.v_proj = nn.Linear(d, value_dim, bias=False)
        self.a_proj = nn.Linear(d, self.num_v_heads, bias=False)
        self.b_proj = nn.Linear(d, self.num_v_heads, bias=False)
        self.g_proj = nn.Linear(d, value_dim, bias=False)
        self.o_proj = nn.Linear(value_dim, d, bias=False)

        def conv(dim):
            return nn.Conv1d(dim, dim, width, groups=dim, padding=width - 1, bias=False)

        self.q_conv1d, self.k_conv1d, self.v_conv1d = conv(key_dim), conv(key_dim), conv(value_dim)
        self.A_log = nn.Parameter(torch.empty(self.num_v_heads))
        self.dt_bias = nn.Parameter(torch.empty(self.num_v_heads))
        self.o_norm = GatedRMSNorm(self.head_v_dim, eps=1e-5)
        self.reset_gates(config)

    @torch.no_grad()
    def reset_gates(self, config):
        """A_log and dt_bias initialisation of transformers' OlmoHybrid (Mamba-2 style dt range)."""
        if self.A_log.is_meta:
            return
        a = torch.empty_like(self.A_log).uniform_(config.linear_a_log_min, config.linear_a_log_max)
        self.A_log.copy_(a.log())
        lo, hi = math.log(config.linear_dt_min), math.log(config.linear_dt_max)
        dt = torch.exp(torch.rand_like(self.dt_bias) * (hi - lo) + lo).clamp(min=config.linear_dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def use_fla(self, x: torch.Tensor) -> bool:
        return takes_fla(x.is_cuda, self.backend)

    def forward(self, x: torch.Tensor, layout: DocLayout, cache=None) -> torch.Tensor:
        """cache (longctx.model.cache.LayerCache): a prefill also stores each document's final state and
        its last W-1 pre-conv inputs; a decode step (one token per sequence) runs from the cache instead."""
        if cache is not None and cache.decoding:
            return self._step(x, cache.store)
        fla = self.use_fla(x)
        conv = self._conv_fla if fla else self._conv_ref
        pre = (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        convs = (self.q_conv1d, self.k_conv1d, self.v_conv1d)
        if layout.cp is not None:  # context parallel: the convs and the recurrence cross rank boundaries
            q, k, v = layout.cp.short_convs(pre, convs, layout, fla=fla)
        else:
            q, k, v = (conv(p, c, layout) for p, c in zip(pre, convs, strict=True))
        init = None
        if cache is not None and cache.continues:  # documents that go on from their sequence's cache
            q, k, v = (
                self._conv_after_cache(o, p, c, tail, cache)
                for o, p, c, tail in zip((q, k, v), pre, convs, cache.store.conv, strict=True)
            )
            going_on = cache.derived("going_on", lambda: device_tensor([s > 0 for s in cache.starts], x.device))
            init = cache.store.state[cache.rows] * going_on[:, None, None, None]
        q, k, v = self.split_heads(q, k, v)
        beta, g = self.gates(x)
        scale = self.head_k_dim**-0.5
        if layout.cp is not None:
            o = layout.cp.gated_delta_rule(q, k, v, g, beta, scale, layout, fla=fla)
        elif cache is not None:
            delta_rule = self._delta_rule_fla if fla else gated_delta_rule_ref
            o, states = delta_rule(q, k, v, g, beta, scale, layout, final_state=True, initial_state=init)
            self._store(cache, pre, states)
        elif fla:
            o = self._delta_rule_fla(q, k, v, g, beta, scale, layout)
        else:
            o = gated_delta_rule_ref(q, k, v, g, beta, scale, layout)

        return self.output(o, x, fla)

    @staticmethod
    def _conv_after_cache(out, pre, conv: nn.Conv1d, tail: torch.Tensor, cache) -> torch.Tensor:
        """The conv output of a packed row [1, T, C] with each continuing document's first W-1 outputs
        recomputed from its sequence's cached pre-conv inputs (the conv padded them with zeros)."""
        w = conv.weight[:, 0, :].t().float()  # [W, C]; tap W-1 is the current token
        n = w.shape[0] - 1
        idx, fix, rows = cache.derived(("conv_fix", n), lambda: GatedDeltaNet._conv_fix_index(cache, n, out))
        window = torch.cat([tail[rows].float(), pre[0, idx].float()], 1)  # [D, 2n, C]
        taps = torch.stack([window[:, j : j + n] for j in range(n + 1)], 2)  # [D, n, W, C]
        fixed = F.silu((taps * w).sum(2)).to(out.dtype).flatten(0, 1)  # [D * n, C]
        out = out.clone()
        out[0, fix[0]] = fixed[fix[1]]
        return out

    @staticmethod
    def _conv_fix_index(cache, n: int, out: torch.Tensor):
        """For _conv_after_cache, the same in every layer and made on the host in one copy (a boolean mask would
        wait for the GPU in each layer): each continuing document's first n token indices in the row [D, n]
        (clamped to the row), [2, F] the row index of each output to fix (a document shorter than n tokens: only
        its own) and its place in the flattened [D * n], and each document's sequence."""
        going = [i for i, s in enumerate(cache.starts) if s > 0]
        first = [cache.docs[i][0] for i in going]
        own = [
            (first[d] + t, d * n + t) for d, i in enumerate(going) for t in range(min(n, cache.docs[i][1] - first[d]))
        ]
        last = out.shape[1] - 1
        idx = [[min(a + t, last) for t in range(n)] for a in first]
        going_rows = [cache.row_list[i] for i in going]
        flat = device_tensor(
            sum(idx, []) + [a for a, _ in own] + [b for _, b in own] + going_rows, out.device, torch.long
        )
        d, f = len(going), len(own)
        return flat[: d * n].view(d, n), flat[d * n : d * n + 2 * f].view(2, f), flat[d * n + 2 * f :]

    def _store(self, cache, pre, states: torch.Tensor) -> None:
        """A prefilled row [1, T, .]: each document's final state and last W-1 pre-conv inputs (those before
        a shorter document: zeros, like the conv's own padding, or the cached ones it goes on from) into its
        sequence's cache."""
        store, rows = cache.store, cache.rows
        n = self.q_conv1d.weight.shape[-1] - 1
        starts = cache.starts or [0] * len(cache.docs)
        for buf, p in zip(store.conv, pre, strict=True):
            tails = []
            for i, (a, b) in enumerate(cache.docs):
                t = p[0, max(a, b - n) : b].to(buf.dtype)
                if t.shape[0] < n:
                    before = buf[rows[i]] if starts[i] > 0 else t.new_zeros(n, t.shape[1])
                    t = torch.cat([before, t])[-n:]
                tails.append(t)
            buf[rows] = torch.stack(tails)
        store.state[rows] = states.to(store.state.dtype)

    def _step(self, x: torch.Tensor, store) -> torch.Tensor:
        """One token per sequence, x [N, 1, D] -> [N, 1, D]; advances the cache (GDNCache) in place."""
        conv_out = []
        for i, (proj, conv) in enumerate(
            ((self.q_proj, self.q_conv1d), (self.k_proj, self.k_conv1d), (self.v_proj, self.v_conv1d))
        ):
            window = torch.cat([store.conv[i], proj(x)], 1)  # [N, W, C], oldest first
            store.conv[i].copy_(window[:, 1:])  # in place, like the state: a CUDA graph replays fixed addresses
            w = conv.weight[:, 0, :].t()  # [W, C]; tap W-1 is the current token
            conv_out.append(F.silu((window.to(w.dtype) * w).sum(1, keepdim=True)).to(x.dtype))
        beta, g = self.gates(x)
        q, k, v, g, beta = (
            h[:, :, 0] for h in heads_first(*self.split_heads(*conv_out), g, beta, self.head_k_dim**-0.5)
        )
        # S <- exp(g) S + k (beta (v - exp(g) S^T k))^T ;  o = S^T q
        S = store.state.mul_(g.exp()[..., None, None])
        u = beta[..., None] * (v - torch.einsum("nhkv,nhk->nhv", S, k))
        S.add_(k[..., :, None] * u[..., None, :])
        o = torch.einsum("nhkv,nhk->nhv", S, q)
        return self.output(o[:, None], x, fla=False)  # one token: the torch norm

    def output(self, o: torch.Tensor, x: torch.Tensor, fla: bool) -> torch.Tensor:
        """Recurrence output o [B, T, HV, V] -> the layer output [B, T, D]: RMSNorm(o) * silu(g_proj x)
        per head (fla's fused kernel or the torch module), then o_proj."""
        B, T, _ = x.shape
        gate = self.g_proj(x).view(B, T, self.num_v_heads, self.head_v_dim)
        if fla:
            o = fla_ops()[2](o, gate, self.o_norm.weight, None, activation="silu", eps=self.o_norm.eps)
        else:
            o = self.o_norm(o.to(x.dtype), gate)
        return self.o_proj(o.reshape(B, T, -1))

    def split_heads(self, q, k, v):
        """Conv outputs [B, T, C] -> q/k [B, T, HK, K], v [B, T, HV, V]."""
        B, T, _ = q.shape
        return (
            q.view(B, T, self.num_k_heads, self.head_k_dim),
            k.view(B, T, self.num_k_heads, self.head_k_dim),
            v.view(B, T, self.num_v_heads, self.head_v_dim),
        )

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """beta (sigmoid, doubled with allow_neg_eigval) and g = -exp(A_log) softplus(a + dt_bias), [B, T, HV]."""
        beta = self.b_proj(x).sigmoid()
        if self.allow_neg_eigval:
            beta = beta * 2.0
        return beta, -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)

    @staticmethod
    def _conv_ref(x, conv: nn.Conv1d, layout: DocLayout):
        return causal_conv_ref(x, conv.weight, layout.doc_pos)

    @staticmethod
    def _conv_fla(x, conv: nn.Conv1d, layout: DocLayout):
        causal_conv1d = fla_ops()[1]
        weight = conv.weight.squeeze(1)
        if not layout.packed:
            return causal_conv1d(x, weight=weight, activation="silu")[0]
        B, T, C = x.shape
        cu, cu_cpu = layout.fla_cu_seqlens()
        y, _ = causal_conv1d(
            x.reshape(1, B * T, C), weight=weight, activation="silu", cu_seqlens=cu, cu_seqlens_cpu=cu_cpu
        )
        return y.view(B, T, C)

    @staticmethod
    def _delta_rule_fla(q, k, v, g, beta, scale, layout: DocLayout, final_state: bool = False, initial_state=None):
        """fla's chunked kernel; with final_state also the state after each document (or row when
        unpacked), [N, HV, K, V] float32, as (o, state); initial_state: [N, HV, K, V] (default zeros)."""
        chunk_gated_delta_rule = fla_ops()[0]
        if not layout.packed:
            o, state = chunk_gated_delta_rule(
                q,
                k,
                v,
                g,
                beta,
                scale=scale,
                use_qk_l2norm_in_kernel=True,
                initial_state=initial_state,
                output_final_state=final_state,
            )
        else:
            B, T = q.shape[:2]
            flat = [x.reshape(1, B * T, *x.shape[2:]) for x in (q, k, v, g, beta)]
            cu, cu_cpu = layout.fla_cu_seqlens()
            o, state = chunk_gated_delta_rule(
                *flat,
                scale=scale,
                use_qk_l2norm_in_kernel=True,
                initial_state=initial_state,
                output_final_state=final_state,
                cu_seqlens=cu,
                cu_seqlens_cpu=cu_cpu,
            )
            o = o.view(B, T, *o.shape[2:])
        return (o, state.float()) if final_state else o
