"""The interface every document source implements (longctx.data.sources, longctx.data.embedded), and the
random-access source that files, lists, map-style datasets and token files share (IndexedSource)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from longctx.errors import UsageError


class DocSource:
    """Base: `iter_epoch` yields (position, document) for the epoch's stream positions >= start that
    belong to shard `rank` of `world_size` (position % world_size == rank); a document is a text, or an
    array of token ids (token files), which the loader does not encode again."""

    name = "source"
    infinite = False

    def iter_epoch(
        self, epoch: int, seed: int, start: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[int, str]]:
        raise NotImplementedError


def _first_owned(start: int, rank: int, world_size: int) -> int:
    return start + (rank - start) % world_size


class IndexedSource(DocSource):
    """Random-access documents; each epoch is a seeded permutation of 0..n-1."""

    def __init__(self, n: int, get_many: Callable[[list[int]], list[str]], name: str):
        if n == 0:
            raise UsageError(f"data source {name!r} has no documents")
        self.n, self.get_many, self.name = n, get_many, name

    def __len__(self) -> int:
        return self.n

    def order(self, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
        if not shuffle:
            return np.arange(self.n)
        return np.random.default_rng([seed, epoch]).permutation(self.n)

    def iter_epoch(
        self, epoch: int, seed: int, start: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[int, str]]:
        order = self.order(epoch, seed, shuffle)
        positions = range(_first_owned(start, rank, world_size), self.n, world_size)
        for i in range(0, len(positions), 64):
            chunk = positions[i : i + 64]
            yield from zip(chunk, self.get_many([int(order[p]) for p in chunk]), strict=True)
