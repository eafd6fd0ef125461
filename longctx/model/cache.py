"""What cached generation keeps per layer, and how a forward is told to fill or step it.

`HybridLM.forward_hidden(..., cache=...)` takes `DecodeCache.prefill(rows, docs)` (a packed row of
prompts: each layer runs as in training and stores what decoding needs for sequences `rows`, one per
document `docs` of the row) or `DecodeCache.step(positions)` (one token per sequence at absolute
`positions`: each layer reads and advances its cache in place). See longctx.model.generate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from longctx.model.hostcopy import device_tensor


@dataclass
class GDNCache:
    state: torch.Tensor  # [N, HV, K, V] float32
    conv: list[torch.Tensor]  # q, k, v pre-conv inputs, each [N, W-1, C]

    def select(self, rows: torch.Tensor) -> None:
        self.state = self.state[rows]
        self.conv = [c[rows] for c in self.conv]

    def tensors(self) -> list[torch.Tensor]:
        return [self.state, *self.conv]

    def copy(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        for t in self.tensors():
            t[dst] = t[src]

    def reset(self) -> None:
        for t in self.tensors():
            t.zero_()


@dataclass
class AttnCache:
    k: torch.Tensor  # [N, S, Hkv, D]
    v: torch.Tensor
    pos: torch.Tensor  # [N, S] absolute position held by each slot, -1 while empty

    def select(self, rows: torch.Tensor) -> None:
        self.k, self.v, self.pos = self.k[rows], self.v[rows], self.pos[rows]

    def tensors(self) -> list[torch.Tensor]:
        return [self.k, self.v, self.pos]

    def copy(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        for t in self.tensors():
            t[dst] = t[src]

    def reset(self) -> None:
        self.k.zero_(), self.v.zero_(), self.pos.fill_(-1)

    def write(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> None:
        """k, v [N, Hkv, D] of the tokens at absolute positions pos [N]."""
        rows = torch.arange(k.shape[0], device=k.device)
        slot = pos % self.k.shape[1]
        self.k[rows, slot] = k.to(self.k.dtype)
        self.v[rows, slot] = v.to(self.v.dtype)
        self.pos[rows, slot] = pos


@dataclass(frozen=True)
class LayerCache:
    """One layer's cache in one forward: filled by a prefill (rows, docs) or stepped (positions)."""

    store: GDNCache | AttnCache
    rows: torch.Tensor | None = None  # prefill: the sequence of each document of the row
    docs: list[tuple[int, int]] | None = None  # prefill: the documents' token ranges in the row
    positions: torch.Tensor | None = None  # decode: [N] absolute position of each sequence's token
    # prefill: each document's first position in its sequence; > 0 continues from what the cache holds
    starts: list[int] | None = None
    # what every layer of one forward derives alike (index tensors, rows on the host): made once, not per layer
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def derived(self, name: str, make):
        """make() once per forward, shared by all layers (no host-device copy or sync per layer)."""
        if name not in self.memo:
            self.memo[name] = make()
        return self.memo[name]

    @property
    def row_list(self) -> list[int]:
        """rows on the host (one device-to-host copy per forward)."""
        return self.derived("row_list", self.rows.tolist)

    @property
    def decoding(self) -> bool:
        return self.positions is not None

    @property
    def continues(self) -> bool:
        """A prefill where some document goes on from its sequence's cache instead of an empty one."""
        return self.starts is not None and any(s > 0 for s in self.starts)


@dataclass(frozen=True)
class CacheRun:
    """A DecodeCache as one forward uses it; `layer(i)` is what layer i gets."""

    cache: DecodeCache
    rows: torch.Tensor | None = None
    docs: list[tuple[int, int]] | None = None
    positions: torch.Tensor | None = None
    starts: list[int] | None = None
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self.cache.layers[i], self.rows, self.docs, self.positions, self.starts, self.memo)


@dataclass
class DecodeCache:
    layers: list  # GDNCache | AttnCache per layer, rows = sequences

    def select(self, rows: list[int]) -> None:
        """Keep only these sequences (in this order), e.g. once others have finished."""
        if not self.layers:
            return
        idx = self._index(rows)
        for cache in self.layers:
            cache.select(idx)

    def reset(self) -> None:
        """Empty again, in place (as new_cache makes it): a CUDA graph of decode steps holds these addresses."""
        for cache in self.layers:
            cache.reset()

    def copy_rows(self, src: list[int], dst: list[int]) -> None:
        """Sequence dst[i] takes sequence src[i]'s cache (a fork: both then go on from the same state)."""
        if not src or not self.layers:
            return
        s, d = self._index(src), self._index(dst)
        for cache in self.layers:
            cache.copy(s, d)

    def _index(self, rows: list[int]) -> torch.Tensor:
        """rows as a long tensor on the caches' device."""
        return device_tensor(rows, self.layers[0].tensors()[0].device, torch.long)

    def prefill(self, rows: torch.Tensor, docs: list[tuple[int, int]], starts: list[int] | None = None) -> CacheRun:
        """rows: the sequence of each document of a packed row; docs: their token ranges in it; starts:
        each document's first position in its sequence (default 0: the sequence starts empty)."""
        return CacheRun(self, rows=rows, docs=docs, starts=starts)

    def step(self, positions: torch.Tensor) -> CacheRun:
        return CacheRun(self, positions=positions)
