"""Greedy generation with a cache over a HybridLM's own modules and weights (RULER evaluation).

`prefill` runs the prompts packed into rows (cu_seqlens, one document per prompt) through the
blocks' submodules and captures, per layer, what decoding needs:
- GDN: the recurrent state after the prompt ([HV, K, V], float32) and the last W-1 pre-conv
  q/k/v inputs (zero-padded for prompts shorter than that, like the conv's own padding);
- attention: K (QK-normed, rotated) and V in a ring of `slots` entries, slot = position % slots.
  A full layer has a slot for every position a sequence reaches; a sliding layer `window` slots,
  exactly what a query can see (position p sees p - window < j <= p), so old keys are overwritten.
`decode_step` then advances a batch of sequences by one token, updating the cache in place;
`greedy_generate` loops it, eagerly or (cuda_graphs) replaying one CUDA graph of it per step.

The layer forwards cannot hand out their states, so the per-layer computations are redone here
with the layers' submodules and the layers' own pieces (Attention.qkv, GatedDeltaNet.gates,
.split_heads and .output, gdn.heads_first). GDN prefill runs fla's varlen kernel with
output_final_state on CUDA (one launch per layer for all packed prompts), the torch reference
elsewhere; decoding steps the recurrence in torch (one token: no kernel needed).

All three entry points run under torch.inference_mode: besides skipping autograd bookkeeping it
is what fla checks before its intra-card context parallelism (FLA_INTRACARD_CP=1), which splits
a long prompt's chunked recurrence over more SMs than its heads alone would occupy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from longctx.model.attention import attend
from longctx.model.gdn import gated_delta_rule_ref, heads_first
from longctx.model.hybrid import DYNAMIC_ROPE_TYPES, AttentionBlock, GDNBlock, HybridLM
from longctx.model.varlen import DocLayout, doc_layout

MAX_PREFILL_TOKENS = 65536  # tokens packed into one prefill row (prompts longer than this get a row each)

# ---------------------------------------------------------------- caches


@dataclass
class GDNCache:
    state: torch.Tensor  # [N, HV, K, V] float32
    conv: list[torch.Tensor]  # q, k, v pre-conv inputs, each [N, W-1, C]

    def select(self, rows: torch.Tensor) -> None:
        self.state = self.state[rows]
        self.conv = [c[rows] for c in self.conv]


@dataclass
class AttnCache:
    k: torch.Tensor  # [N, S, Hkv, D]
    v: torch.Tensor
    pos: torch.Tensor  # [N, S] absolute position held by each slot, -1 while empty

    def select(self, rows: torch.Tensor) -> None:
        self.k, self.v, self.pos = self.k[rows], self.v[rows], self.pos[rows]

    def write(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> None:
        """k, v [N, Hkv, D] of the tokens at absolute positions pos [N]."""
        rows = torch.arange(k.shape[0], device=k.device)
        slot = pos % self.k.shape[1]
        self.k[rows, slot] = k.to(self.k.dtype)
        self.v[rows, slot] = v.to(self.v.dtype)
        self.pos[rows, slot] = pos


@dataclass
class DecodeCache:
    layers: list  # GDNCache | AttnCache per layer, rows = sequences

    def select(self, rows: list[int]) -> None:
        """Keep only these sequences (in this order), e.g. once others have finished."""
        if not self.layers:
            return
        first = self.layers[0]
        device = (first.state if isinstance(first, GDNCache) else first.k).device
        idx = torch.tensor(rows, dtype=torch.long, device=device)
        for cache in self.layers:
            cache.select(idx)


# ---------------------------------------------------------------- GDN pieces


def _convs(gdn):
    return ((gdn.q_proj, gdn.q_conv1d), (gdn.k_proj, gdn.k_conv1d), (gdn.v_proj, gdn.v_conv1d))


def _tail(x: torch.Tensor, n: int) -> torch.Tensor:
    """Last n rows of [L, C], zero rows in front when L < n."""
    x = x[max(0, x.shape[0] - n):]
    return F.pad(x, (0, 0, n - x.shape[0], 0))


def _gdn_prefill(gdn, x: torch.Tensor, layout: DocLayout, docs: list[tuple[int, int]]):
    """x [1, T, D] -> (output [1, T, D], final states [n_docs, HV, K, V], conv tails).

    The layer's own kernels: fla's varlen chunked kernel on CUDA (it hands out each document's
    final state itself), the torch reference elsewhere; both cut at the documents' boundaries."""
    fla = gdn.use_fla(x)
    conv = gdn._conv_fla if fla else gdn._conv_ref
    pre = [proj(x) for proj, _ in _convs(gdn)]
    conv_out = [conv(p, c, layout) for p, (_, c) in zip(pre, _convs(gdn))]
    W = gdn.q_conv1d.weight.shape[-1]
    tails = [torch.stack([_tail(p[0, a:b], W - 1) for a, b in docs]) for p in pre]
    beta, g = gdn.gates(x)
    delta_rule = gdn._delta_rule_fla if fla else gated_delta_rule_ref
    o, states = delta_rule(*gdn.split_heads(*conv_out), g, beta, gdn.head_k_dim**-0.5, layout, final_state=True)
    return gdn.output(o, x, fla), states, tails


def _gdn_step(gdn, x: torch.Tensor, cache: GDNCache) -> torch.Tensor:
    """One token per sequence, x [N, 1, D] -> [N, 1, D]; advances the cache."""
    conv_out = []
    for i, (proj, conv) in enumerate(_convs(gdn)):
        window = torch.cat([cache.conv[i], proj(x)], 1)  # [N, W, C], oldest first
        cache.conv[i].copy_(window[:, 1:])  # in place, like the state: a CUDA graph replays fixed addresses
        w = conv.weight[:, 0, :].t()  # [W, C]; tap W-1 is the current token
        conv_out.append(F.silu((window.to(w.dtype) * w).sum(1, keepdim=True)).to(x.dtype))
    beta, g = gdn.gates(x)
    q, k, v, g, beta = (h[:, :, 0] for h in heads_first(*gdn.split_heads(*conv_out), g, beta, gdn.head_k_dim**-0.5))
    # S <- exp(g) S + k (beta (v - exp(g) S^T k))^T ;  o = S^T q
    S = cache.state.mul_(g.exp()[..., None, None])
    u = beta[..., None] * (v - torch.einsum("nhkv,nhk->nhv", S, k))
    S.add_(k[..., :, None] * u[..., None, :])
    o = torch.einsum("nhkv,nhk->nhv", S, q)
    return gdn.output(o[:, None], x, fla=False)  # one token: the torch norm


# ---------------------------------------------------------------- attention pieces


def _attn_step(attn, x: torch.Tensor, rope, cache: AttnCache, pos: torch.Tensor) -> torch.Tensor:
    q, k, v = attn.qkv(x, rope)
    cache.write(k[:, 0], v[:, 0], pos)
    # a sliding layer's ring has `window` slots: after this write it holds exactly positions
    # pos - window < j <= pos, so only the empty slots need masking
    allowed = cache.pos >= 0
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), cache.k.transpose(1, 2), cache.v.transpose(1, 2),
        attn_mask=allowed[:, None, None, :], scale=attn.scale, enable_gqa=attn.num_heads != attn.num_kv_heads,
    )
    return attn.o_proj(out.transpose(1, 2).reshape(x.shape[0], 1, -1))


# ---------------------------------------------------------------- model level


def _check(model: HybridLM) -> None:
    if model.context_parallel is not None:
        raise ValueError("greedy_generate runs on a model without context parallelism")
    for layer_type, spec in model._rope.items():
        if spec is not None and spec[0].get("rope_type") in DYNAMIC_ROPE_TYPES:
            raise ValueError(f"rope_type {spec[0]['rope_type']!r} ({layer_type}) changes with the sequence length; "
                             "cached decoding supports static RoPE or none")


def _pack_rows(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Consecutive prompts into rows of at most max_tokens tokens (a longer prompt gets its own row)."""
    rows, cur, total = [], [], 0
    for i, n in enumerate(lengths):
        if cur and total + n > max_tokens:
            rows.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += n
    if cur:
        rows.append(cur)
    return rows


def _cache_dtype(model: HybridLM) -> torch.dtype:
    """The dtype activations have: the autocast dtype when autocast is on for the model's device
    (the training loop's probe runs fp32 master weights under bf16 autocast), else the weights'."""
    w = model.model.embed_tokens.weight
    if torch.is_autocast_enabled(w.device.type):
        return torch.get_autocast_dtype(w.device.type)
    return w.dtype


@torch.inference_mode()
def prefill(
    model: HybridLM, prompts: list[list[int]], capacity: int, max_prefill_tokens: int = MAX_PREFILL_TOKENS
) -> tuple[DecodeCache, torch.Tensor]:
    """Run the prompts, several packed per row, and return (cache, logits [N, V] of each last token).

    capacity: the most positions any sequence will reach (prompt + generated tokens); it sizes the
    full-attention caches.
    """
    _check(model)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prefill needs at least one prompt and no empty prompt")
    capacity = max(capacity, max(len(p) for p in prompts))
    device = model.lm_head.weight.device
    dtype = _cache_dtype(model)
    N = len(prompts)

    caches = []
    for layer in model.model.layers:
        if isinstance(layer, GDNBlock):
            gdn = layer.linear_attn
            W = gdn.q_conv1d.weight.shape[-1]
            caches.append(GDNCache(
                state=torch.zeros(N, gdn.num_v_heads, gdn.head_k_dim, gdn.head_v_dim, device=device),
                conv=[torch.zeros(N, W - 1, proj.out_features, device=device, dtype=dtype)
                      for proj, _ in _convs(gdn)],
            ))
        elif isinstance(layer, AttentionBlock):
            attn = layer.self_attn
            slots = capacity if attn.window is None else min(capacity, attn.window)
            shape = (N, slots, attn.num_kv_heads, attn.head_dim)
            caches.append(AttnCache(
                k=torch.zeros(shape, device=device, dtype=dtype), v=torch.zeros(shape, device=device, dtype=dtype),
                pos=torch.full((N, slots), -1, dtype=torch.long, device=device),
            ))
        else:
            raise TypeError(f"unknown block {type(layer).__name__}")

    last_hidden = [None] * N
    for row in _pack_rows([len(p) for p in prompts], max_prefill_tokens):
        ids = torch.tensor([t for i in row for t in prompts[i]], dtype=torch.long, device=device)[None]
        bounds = [0]
        for i in row:
            bounds.append(bounds[-1] + len(prompts[i]))
        docs = list(zip(bounds[:-1], bounds[1:]))
        layout = doc_layout(torch.tensor(bounds, dtype=torch.int32), 1, bounds[-1], device)
        positions = layout.doc_pos if layout.packed else torch.arange(bounds[-1], device=device)[None]
        ropes = model._rope_tables(positions, layout)
        rows_idx = torch.tensor(row, dtype=torch.long, device=device)

        h = model.model.embed_tokens(ids)
        for layer, cache in zip(model.model.layers, caches):
            if isinstance(layer, GDNBlock):
                out, states, tails = _gdn_prefill(layer.linear_attn, layer.attention_layer_norm(h), layout, docs)
                cache.state[rows_idx] = states.to(cache.state.dtype)
                for buf, tail in zip(cache.conv, tails):
                    buf[rows_idx] = tail.to(buf.dtype)
                h = h + out
                h = h + layer.mlp(layer.feedforward_layer_norm(h))
            else:
                attn = layer.self_attn
                q, k, v = attn.qkv(h, ropes[layer.layer_type])
                out = attn.o_proj(attend(q, k, v, layout, attn.window, attn.scale).reshape(1, bounds[-1], -1))
                slots = cache.k.shape[1]
                for i, (a, b) in zip(row, docs):
                    keep = torch.arange(max(a, b - slots), b, device=device)  # the newest `slots` tokens
                    pos = keep - a
                    cache.k[i, pos % slots] = k[0, keep].to(cache.k.dtype)
                    cache.v[i, pos % slots] = v[0, keep].to(cache.v.dtype)
                    cache.pos[i, pos % slots] = pos
                h = h + layer.post_attention_layernorm(out)
                h = h + layer.post_feedforward_layernorm(layer.mlp(h))
        for i, (_, b) in zip(row, docs):
            last_hidden[i] = h[0, b - 1]
    logits = model.lm_head(model.model.norm(torch.stack(last_hidden)))
    return DecodeCache(caches), logits


@torch.inference_mode()
def decode_step(model: HybridLM, cache: DecodeCache, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Feed one token per sequence: tokens, positions [N] (absolute position of each token in its
    sequence). Returns logits [N, V] and advances the cache in place (no cache tensor is
    replaced, so that a CUDA graph of this step can be replayed on the same cache)."""
    positions = positions.to(tokens.device)
    ropes = model._rope_tables(positions[:, None])
    h = model.model.embed_tokens(tokens[:, None])
    for layer, c in zip(model.model.layers, cache.layers):
        if isinstance(layer, GDNBlock):
            h = h + _gdn_step(layer.linear_attn, layer.attention_layer_norm(h), c)
            h = h + layer.mlp(layer.feedforward_layer_norm(h))
        else:
            out = _attn_step(layer.self_attn, h, ropes[layer.layer_type], c, positions)
            h = h + layer.post_attention_layernorm(out)
            h = h + layer.post_feedforward_layernorm(layer.mlp(h))
    return model.lm_head(model.model.norm(h[:, 0]))


class _GraphedStep:
    """decode_step(model, cache, ., .) replayed from one CUDA graph: ~100 small kernels per layer
    and their Python dispatch become one launch (a step of a 1.3B hybrid at a few sequences is
    launch-bound). The graph holds the cache's addresses and fixed input buffers (tokens,
    positions [N]), so the batch may never change: finished rows stay in it.

    The first WARMUP calls run eagerly on a side stream, as real steps (a warm-up on dummy inputs
    would advance the cache); they create what is made lazily on first use (cuBLAS handles and
    workspaces) outside the capture. The next call captures and replays; the logits it returns
    are the graph's output buffer, overwritten by the next call. A capture that fails (an op that
    syncs with the host) warns and leaves the steps eager. decode_step has nothing on the host
    that depends on the inputs: the RoPE tables come from the device cache that prefill filled,
    and RoPE types computed on the host from the sequence length are refused by prefill (_check).
    """

    WARMUP = 2

    def __init__(self, model: HybridLM, cache: DecodeCache, device: torch.device):
        self.model, self.cache, self.device = model, cache, device
        self.calls, self.graph, self.eager = 0, None, False
        self.stream = torch.cuda.Stream(device)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(self.device):  # streams and capture on the model's GPU, not the current one
            return self._step(tokens, positions)

    def _step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.graph is not None:
            self.tokens.copy_(tokens)
            self.positions.copy_(positions)
            self.graph.replay()
            return self.logits
        if self.eager:
            return decode_step(self.model, self.cache, tokens, positions)
        if self.calls <= self.WARMUP:
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                logits = decode_step(self.model, self.cache, tokens, positions)
            torch.cuda.current_stream().wait_stream(self.stream)
            return logits
        self.tokens, self.positions = tokens.clone(), positions.clone()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.logits = decode_step(self.model, self.cache, self.tokens, self.positions)
        except RuntimeError as e:  # a capture runs no kernel: the cache is as it was
            warnings.warn(f"greedy_generate: CUDA graph capture failed, decoding eagerly ({e})")
            self.eager = True
            return decode_step(self.model, self.cache, tokens, positions)
        self.graph = graph
        graph.replay()
        return self.logits


@torch.inference_mode()
def greedy_generate(
    model: HybridLM,
    prompts: list[list[int]],
    max_new_tokens: int | list[int],
    eos_token_ids: set[int] | None = None,
    stop_sequences: Callable[[int, list[int]], bool] | None = None,
    max_prefill_tokens: int = MAX_PREFILL_TOKENS,
    cuda_graphs: bool = False,
) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids), batched.

    A sequence stops at an EOS token (not included in its output), after max_new_tokens tokens
    (one number for all or one per prompt), or once stop_sequences(prompt_index, generated_ids)
    returns True (the token just generated is kept; the caller trims stop strings).
    max_prefill_tokens: prompts are packed into prefill rows of at most this many tokens.
    cuda_graphs: on a CUDA device, replay the decode steps from one CUDA graph (_GraphedStep).
    Its shapes are fixed, so finished sequences then stay in the batch instead of being dropped
    from the cache: they go on decoding (their positions may pass `capacity`: the rings wrap) and
    their tokens are ignored. On CPU this static batch runs eagerly.
    """
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != len(prompts) or any(b < 0 for b in budgets):
        raise ValueError("max_new_tokens must be >= 0, one value or one per prompt")
    eos = set(eos_token_ids or ())
    results: list[list[int]] = [[] for _ in prompts]
    active = [i for i, b in enumerate(budgets) if b > 0]  # prompt index of each cache row
    if not active:
        return results
    capacity = max(len(prompts[i]) + budgets[i] for i in active)
    cache, logits = prefill(model, [prompts[i] for i in active], capacity, max_prefill_tokens)
    positions = torch.tensor([len(prompts[i]) for i in active], dtype=torch.long, device=logits.device)
    step = _GraphedStep(model, cache, logits.device) if cuda_graphs and logits.is_cuda else \
        lambda tokens, positions: decode_step(model, cache, tokens, positions)
    live = list(range(len(active)))  # cache rows still generating
    while True:
        tokens = logits.argmax(-1)
        ids = tokens.tolist()
        keep = []
        for row in live:
            i, t = active[row], ids[row]
            if t in eos:
                continue
            results[i].append(t)
            if len(results[i]) >= budgets[i] or (stop_sequences is not None and stop_sequences(i, results[i])):
                continue
            keep.append(row)
        if not keep:
            return results
        if not cuda_graphs and len(keep) < len(active):
            cache.select(keep)
            rows = torch.tensor(keep, dtype=torch.long, device=tokens.device)
            tokens, positions = tokens[rows], positions[rows]
            active, keep = [active[r] for r in keep], list(range(len(keep)))
        live = keep
        logits = step(tokens, positions)
        positions = positions + 1
