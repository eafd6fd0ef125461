"""Greedy generation with a cache over a HybridLM's own modules and weights (RULER evaluation).

`prefill` runs the prompts packed into rows (cu_seqlens, one document per prompt) through the
model's own forward (HybridLM.forward_hidden with a cache) and captures, per layer, what decoding needs:
- GDN: the recurrent state after the prompt ([HV, K, V], float32) and the last W-1 pre-conv
  q/k/v inputs (zero-padded for prompts shorter than that, like the conv's own padding);
- attention: K (QK-normed, rotated) and V in a ring of `slots` entries, slot = position % slots.
  A full layer has a slot for every position a sequence reaches; a sliding layer `window` slots,
  exactly what a query can see (position p sees p - window < j <= p), so old keys are overwritten.
`decode_step` then advances a batch of sequences by one token, updating the cache in place;
`greedy_generate` loops it, eagerly or (cuda_graphs) replaying one CUDA graph of it per step.

Training, evaluation and generation share that forward: the layers fill and step the caches
(longctx.model.cache) themselves. GDN prefill runs fla's varlen kernel with output_final_state on
CUDA (one launch per layer for all packed prompts), the torch reference elsewhere; decoding steps the
recurrence in torch (one token: no kernel needed).

All three entry points run under torch.inference_mode: besides skipping autograd bookkeeping it
is what fla checks before its intra-card context parallelism (FLA_INTRACARD_CP=1), which splits
a long prompt's chunked recurrence over more SMs than its heads alone would occupy.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Callable

import torch

from longctx.model.cache import AttnCache, DecodeCache, GDNCache
from longctx.model.hostcopy import device_tensor
from longctx.model.hybrid import DYNAMIC_ROPE_TYPES, AttentionBlock, GDNBlock, HybridLM
from longctx.model.prefix import Segment, SharePlan, plan_shared_prefill

MAX_PREFILL_TOKENS = 65536  # tokens packed into one prefill row (prompts longer than this get a row each)


# ---------------------------------------------------------------- model level


def check_cacheable(model: HybridLM) -> None:
    """Raise ValueError when `model` cannot decode with a cache: context parallel, or RoPE computed per length."""
    if model.context_parallel is not None:
        raise ValueError("greedy_generate runs on a model without context parallelism")
    for layer_type, spec in model._rope.items():
        if spec is not None and spec[0].get("rope_type") in DYNAMIC_ROPE_TYPES:
            raise ValueError(
                f"rope_type {spec[0]['rope_type']!r} ({layer_type}) changes with the sequence length; "
                "cached decoding supports static RoPE or none"
            )


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
    if w.device.type != "meta" and torch.is_autocast_enabled(w.device.type):  # meta: a model sized, not run
        return torch.get_autocast_dtype(w.device.type)
    return w.dtype


def new_cache(model: HybridLM, n: int, capacity: int, device, dtype: torch.dtype) -> list:
    """Each layer's empty decode cache for n sequences of up to `capacity` positions (see the module doc)."""
    caches = []
    for layer in model.model.layers:
        if isinstance(layer, GDNBlock):
            gdn = layer.linear_attn
            W = gdn.q_conv1d.weight.shape[-1]
            caches.append(
                GDNCache(
                    state=torch.zeros(n, gdn.num_v_heads, gdn.head_k_dim, gdn.head_v_dim, device=device),
                    conv=[
                        torch.zeros(n, W - 1, proj.out_features, device=device, dtype=dtype)
                        for proj in (gdn.q_proj, gdn.k_proj, gdn.v_proj)
                    ],
                )
            )
        elif isinstance(layer, AttentionBlock):
            attn = layer.self_attn
            slots = capacity if attn.window is None else min(capacity, attn.window)
            shape = (n, slots, attn.num_kv_heads, attn.head_dim)
            caches.append(
                AttnCache(
                    k=torch.zeros(shape, device=device, dtype=dtype),
                    v=torch.zeros(shape, device=device, dtype=dtype),
                    pos=torch.full((n, slots), -1, dtype=torch.long, device=device),
                )
            )
        else:
            raise TypeError(f"unknown block {type(layer).__name__}")
    return caches


def _shapes(c: GDNCache | AttnCache) -> list[tuple]:
    return [(tuple(t.shape), t.dtype) for t in c.tensors()]


def sequence_cache_bytes(model: HybridLM, capacity: int) -> int:
    """Bytes of one sequence's decode cache at `capacity` positions: the cache prefill allocates, built on
    the meta device (no memory) and summed."""
    caches = new_cache(model, 1, capacity, "meta", _cache_dtype(model))
    return sum(t.numel() * t.element_size() for c in caches for t in c.tensors())


def prefill_reserve_bytes(model: HybridLM, max_prefill_tokens: int = MAX_PREFILL_TOKENS) -> int:
    """A bound on what one packed prefill row holds besides the caches, whatever the batch: per token the
    block's input and output, q/k/v and the MLP's gate, up and product, with room for the kernels' own
    buffers (4x), at the activations' width."""
    cfg = model.config
    width = _cache_dtype(model).itemsize
    return 4 * max_prefill_tokens * (4 * cfg.hidden_size + 3 * cfg.intermediate_size) * width


def generation_batch_size(
    model: HybridLM, capacity: int, free_bytes: int | None = None, limit: int = 64, fraction: float = 0.9
) -> int:
    """How many sequences of up to `capacity` positions greedy_generate can decode at once: `fraction` of the
    memory free on the model's device (free_bytes; default: measured: the GPU's free memory plus what torch
    holds unused, or a quarter of the host's available memory on CPU) less one prefill row's reserve, over
    sequence_cache_bytes; at least 1, at most `limit`."""
    if free_bytes is None:
        free_bytes = _free_bytes(model.lm_head.weight.device)
    room = fraction * free_bytes - prefill_reserve_bytes(model)
    return int(max(1, min(limit, room // sequence_cache_bytes(model, capacity))))


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    import os

    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError):  # no such figure on this OS
        return 4 << 30


@torch.inference_mode()
def prefill(
    model: HybridLM,
    prompts: list[list[int]],
    capacity: int,
    max_prefill_tokens: int = MAX_PREFILL_TOKENS,
    share_prefixes: bool = False,
    stats: dict | None = None,
    cache: DecodeCache | None = None,
) -> tuple[DecodeCache, torch.Tensor]:
    """Run the prompts, several packed per row, and return (cache, logits [N, V] of each last token).

    capacity: the most positions any sequence will reach (prompt + generated tokens); it sizes the
    full-attention caches.
    share_prefixes: prefill the prefixes prompts share once (longctx.model.prefix: a few levels of
    packed prefills, each going on from the cache the level before left, forked to the prompts below).
    stats: a dict whose "prompt_tokens" and "prefilled_tokens" counts grow by this call's.
    cache: a DecodeCache of N sequences and `capacity` positions to empty and fill in place instead of a new one
    (greedy_generate's keep_graph: a CUDA graph of the decode step holds its addresses).
    """
    check_cacheable(model)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prefill needs at least one prompt and no empty prompt")
    capacity = max(capacity, max(len(p) for p in prompts))
    device = model.lm_head.weight.device
    dtype = _cache_dtype(model)
    N = len(prompts)

    if cache is None:
        run = DecodeCache(new_cache(model, N, capacity, device, dtype))
    else:
        like = DecodeCache(new_cache(model, N, capacity, "meta", dtype))
        if [_shapes(c) for c in cache.layers] != [_shapes(c) for c in like.layers]:
            raise ValueError(f"prefill: the cache given is not one of {N} sequences of {capacity} positions")
        run = cache
        run.reset()
    last_hidden = [None] * N
    if share_prefixes:
        plan = plan_shared_prefill(prompts)
    else:
        total = sum(map(len, prompts))
        plan = SharePlan([([], [Segment(i, 0, len(p)) for i, p in enumerate(prompts)])], total, total)
    if stats is not None:
        stats["prompt_tokens"] = stats.get("prompt_tokens", 0) + plan.total
        stats["prefilled_tokens"] = stats.get("prefilled_tokens", 0) + plan.computed
    for forks, segments in plan.levels:
        run.copy_rows([src for src, _ in forks], [dst for _, dst in forks])
        for row in _pack_rows([s.end - s.start for s in segments], max_prefill_tokens):
            segs = [segments[i] for i in row]
            ids = device_tensor([t for s in segs for t in prompts[s.row][s.start : s.end]], device)[None]
            bounds = [0]
            for s in segs:
                bounds.append(bounds[-1] + s.end - s.start)
            docs = list(zip(bounds[:-1], bounds[1:], strict=True))
            rows = device_tensor([s.row for s in segs], device, torch.long)
            starts = [s.start for s in segs]
            positions = None
            if any(starts):  # each document at its place in its sequence
                positions = device_tensor(torch.cat([torch.arange(s.start, s.end) for s in segs]), device)[None]
            h = model.forward_hidden(
                ids,
                positions,
                cu_seqlens=torch.tensor(bounds, dtype=torch.int32),
                cache=run.prefill(rows, docs, starts if any(starts) else None),
            )
            for s, (_, b) in zip(segs, docs, strict=True):
                if s.end == len(prompts[s.row]):
                    last_hidden[s.row] = h[0, b - 1]
    return run, model.lm_head(torch.stack(last_hidden))


@torch.inference_mode()
def decode_step(model: HybridLM, cache: DecodeCache, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Feed one token per sequence: tokens, positions [N] (absolute position of each token in its
    sequence). Returns logits [N, V] and advances the cache in place (no cache tensor is
    replaced, so that a CUDA graph of this step can be replayed on the same cache)."""
    positions = positions.to(tokens.device)
    h = model.forward_hidden(tokens[:, None], positions[:, None], cache=cache.step(positions))
    return model.lm_head(h[:, 0])


KEEP_ROUND = 256  # greedy_generate(keep_graph=True) rounds the capacity up to this: batches of similar length match
_KEPT: dict = {}  # what greedy_generate(keep_graph=True) keeps: model (weak), key, cache, step


def release_kept(model: HybridLM | None = None) -> None:
    """Free the cache and CUDA graph greedy_generate(keep_graph=True) keeps for its next call (only if kept for
    `model`, when given). The kept decode step holds its model: a model is freed after its kept set."""
    if model is None or (_KEPT.get("model") is not None and _KEPT["model"]() is model):
        _KEPT.clear()


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
    and RoPE types computed on the host from the sequence length are refused by prefill (check_cacheable).
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
            warnings.warn(f"greedy_generate: CUDA graph capture failed, decoding eagerly ({e})", stacklevel=2)
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
    share_prefixes: bool = False,
    stats: dict | None = None,
    keep_graph: bool = False,
) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids), batched.

    A sequence stops at an EOS token (not included in its output), after max_new_tokens tokens
    (one number for all or one per prompt), or once stop_sequences(prompt_index, generated_ids)
    returns True (the token just generated is kept; the caller trims stop strings).
    max_prefill_tokens: prompts are packed into prefill rows of at most this many tokens.
    share_prefixes: prefill the prefixes prompts share once (see prefill).
    stats: see prefill; also its "generate_s" (this call's wall time, to the last token on the host), "calls" and
    "decode_steps" (the batch's decode steps) grow by this call's.
    cuda_graphs: on a CUDA device, replay the decode steps from one CUDA graph (_GraphedStep).
    Its shapes are fixed, so finished sequences then stay in the batch instead of being dropped
    from the cache: they go on decoding (their positions may pass `capacity`: the rings wrap) and
    their tokens are ignored. On CPU this static batch runs eagerly.
    keep_graph (with cuda_graphs): keep this call's cache and decode graph for the next call of as many
    prompts and the same capacity (rounded up to KEEP_ROUND positions; same model, weights where they were),
    which prefills into that cache and replays the graph instead of warming up and capturing again (one
    set kept at a time, until release_kept()).
    """
    t0 = time.perf_counter()
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != len(prompts) or any(b < 0 for b in budgets):
        raise ValueError("max_new_tokens must be >= 0, one value or one per prompt")
    eos = set(eos_token_ids or ())
    results: list[list[int]] = [[] for _ in prompts]
    active = [i for i, b in enumerate(budgets) if b > 0]  # prompt index of each cache row
    if not active:
        return results
    capacity = max(len(prompts[i]) + budgets[i] for i in active)
    kept, key = None, None
    if keep_graph and cuda_graphs:
        capacity = -(-capacity // KEEP_ROUND) * KEEP_ROUND
        key = (len(active), capacity, _cache_dtype(model), tuple(p.data_ptr() for p in model.parameters()))
        if _KEPT.get("model") is not None and _KEPT["model"]() is model and _KEPT["key"] == key:
            kept = _KEPT["cache"], _KEPT["step"]
        else:
            release_kept()  # before this call's cache is made: one set held at a time
    cache, logits = prefill(
        model, [prompts[i] for i in active], capacity, max_prefill_tokens, share_prefixes, stats,
        cache=kept[0] if kept else None,
    )  # fmt: skip
    positions = device_tensor([len(prompts[i]) for i in active], logits.device, torch.long)
    if kept is not None:
        step = kept[1]
    elif cuda_graphs and logits.is_cuda:
        step = _GraphedStep(model, cache, logits.device)
    else:

        def step(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
            return decode_step(model, cache, tokens, positions)

    if key is not None:
        _KEPT.update(model=weakref.ref(model), key=key, cache=cache, step=step)
    live = list(range(len(active)))  # cache rows still generating
    steps = 0
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
            if stats is not None:
                for k, v in (("generate_s", time.perf_counter() - t0), ("calls", 1), ("decode_steps", steps)):
                    stats[k] = stats.get(k, 0) + v
            return results
        if not cuda_graphs and len(keep) < len(active):
            cache.select(keep)
            rows = torch.tensor(keep, dtype=torch.long, device=tokens.device)
            tokens, positions = tokens[rows], positions[rows]
            active, keep = [active[r] for r in keep], list(range(len(keep)))
        live = keep
        logits = step(tokens, positions)
        steps += 1
        positions = positions + 1
