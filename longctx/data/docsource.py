"""The interface every document source implements (longctx.data.sources, longctx.data.embedded)."""

from __future__ import annotations

from collections.abc import Iterator


class DocSource:
    """Base: `iter_epoch` yields (position, text) for the epoch's stream positions >= start that
    belong to shard `rank` of `world_size` (position % world_size == rank)."""

    name = "source"
    infinite = False

    def iter_epoch(
        self, epoch: int, seed: int, start: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[int, str]]:
        raise NotImplementedError
