"""Which tokens each rank holds: rows split over data parallel, each row split over context parallel.

A row of T tokens is cut into equal segments. "contiguous": C segments, rank r holds segment r.
"zigzag" (the default): 2C segments, rank r holds segments r and 2C-1-r, in that order. Under a
causal mask the work of a query grows with its position, so zigzag gives every rank one cheap
and one expensive segment and the same attention work in total; contiguous leaves the last rank
with ~(2C-1)x the first one's. GDN and the MLPs cost the same per token wherever it sits.

Every function here is pure (no process group), so the layout is tested without processes.
"""

from __future__ import annotations

import torch

from longctx.data.packing import IGNORE_INDEX
from longctx.errors import UsageError

CP_LAYOUTS = ("zigzag", "contiguous")


def num_segments(cp: int, layout: str) -> int:
    if layout not in CP_LAYOUTS:
        raise UsageError(f"context-parallel layout {layout!r} unknown; accepted: {', '.join(CP_LAYOUTS)}")
    return 2 * cp if layout == "zigzag" else cp


def rank_segments(cp_rank: int, cp: int, layout: str) -> list[int]:
    """Global segment indices a rank holds, in the order its local tokens are laid out."""
    num_segments(cp, layout)
    return [cp_rank, 2 * cp - 1 - cp_rank] if layout == "zigzag" else [cp_rank]


def segment_owner(segment: int, cp: int, layout: str) -> tuple[int, int]:
    """(cp rank, index among that rank's segments) of a global segment."""
    if layout == "zigzag":
        return (segment, 0) if segment < cp else (2 * cp - 1 - segment, 1)
    return segment, 0


def local_index(seq_len: int, cp_rank: int, cp: int, layout: str = "zigzag") -> torch.Tensor:
    """Row positions (0..seq_len-1) of a rank's local tokens, in local order: LongTensor [seq_len // cp]."""
    seg = seq_len // num_segments(cp, layout)
    return torch.cat([torch.arange(s * seg, (s + 1) * seg) for s in rank_segments(cp_rank, cp, layout)])


def check_parallel(
    dp: int,
    cp: int,
    *,
    world_size: int | None = None,
    seq_len: int | None = None,
    batch_size: int | None = None,
    cp_layout: str = "zigzag",
    conv_width: int | None = None,
) -> None:
    """Raise UsageError (one line) for a (dp, cp) layout that cannot run; call before writing anything.

    batch_size is the global number of sequences per micro-batch (split over dp ranks); seq_len is
    split over cp ranks; conv_width is the GDN short-conv width (each segment must hold the
    width-1 tokens the next segment's conv reads).
    """
    for flag, v in (("--dp", dp), ("--cp", cp)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UsageError(f"{flag} {v!r}: need an integer >= 1")
    if world_size is not None and dp * cp != world_size:
        raise UsageError(
            f"--dp {dp} x --cp {cp} = {dp * cp} processes, "
            f"but {world_size} {'was' if world_size == 1 else 'were'} started "
            f"(torchrun --nproc-per-node x nodes); accepted: dp * cp = {world_size}"
        )
    if batch_size is not None and batch_size % dp:
        raise UsageError(
            f"--batch-size {batch_size} (sequences per micro-batch, all data-parallel ranks together) "
            f"is not divisible by --dp {dp}; accepted: a multiple of {dp}"
        )
    if seq_len is not None and cp > 1:
        parts = num_segments(cp, cp_layout)
        how = f"2 x --cp {cp}" if cp_layout == "zigzag" else f"--cp {cp}"
        if seq_len % parts:
            raise UsageError(
                f"--seq-len {seq_len} is not divisible by {how} = {parts} ({cp_layout} context parallel "
                f"cuts each sequence into {parts} equal segments); accepted: a multiple of {parts}"
            )
        if conv_width is not None and seq_len // parts < conv_width - 1:
            raise UsageError(
                f"--seq-len {seq_len} over {parts} segments leaves {seq_len // parts} tokens per segment, "
                f"fewer than the {conv_width - 1} the GDN short conv reads across a boundary; "
                f"accepted: --seq-len >= {parts * (conv_width - 1)}"
            )


def _rows_cu_seqlens(cu_seqlens: torch.Tensor, first_row: int, rows: int, seq_len: int) -> torch.Tensor:
    lo, hi = first_row * seq_len, (first_row + rows) * seq_len
    kept = cu_seqlens[(cu_seqlens >= lo) & (cu_seqlens <= hi)] - lo
    return kept.to(cu_seqlens.dtype)


def shard_batch(batch: dict, *, dp_rank: int, dp: int, cp_rank: int, cp: int, layout: str = "zigzag") -> dict:
    """This rank's part of a loader batch (see longctx.data.packing.pack_batch).

    Rows: the dp_rank-th of dp equal groups. Within them input_ids, labels and position_ids keep
    only this rank's tokens (`local_index`); cu_seqlens keeps describing the selected rows in full,
    which is what the context-parallel layers read to find documents across rank boundaries.
    """
    ids = batch["input_ids"]
    B, T = ids.shape
    check_parallel(dp, cp, seq_len=T, batch_size=B, cp_layout=layout)
    rows = B // dp
    r0 = dp_rank * rows
    out = dict(batch)
    idx = local_index(T, cp_rank, cp, layout) if cp > 1 else None
    for key in ("input_ids", "labels", "position_ids"):
        t = batch.get(key)
        if t is None:
            continue
        if t.dim() == 1 or t.shape[0] == 1 and B > 1:  # positions shared by all rows
            part = t
        else:
            part = t[r0 : r0 + rows]
        if idx is not None:
            part = part.index_select(-1, idx.to(part.device))
        out[key] = part
    cu = batch.get("cu_seqlens")
    if cu is not None:
        out["cu_seqlens"] = _rows_cu_seqlens(cu, r0, rows, T)
    if "labels" in out and "num_tokens" in batch:
        out["num_tokens"] = int((out["labels"] != IGNORE_INDEX).sum())
    return out
