"""Context parallelism for HybridLM: each rank holds T/C tokens of every row.

`ContextParallel` is installed as `model.context_parallel`; `HybridLM.forward_hidden` then asks it
for the per-forward `DocLayout`, whose `.cp` (a `CPLayout`) the layers call instead of their
single-process kernels:
- attention (`cp_attention.py`): all-gather keys/values, local queries, a mask from global positions;
- GDN (`cp_gdn.py`): short-conv halos from the previous segment's owner, and the recurrence's
  state carried across segments through the affine form of the gated delta rule.
Everything else in the model (embeddings, norms, MLPs, RoPE with given positions) is per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from longctx.distributed import cp_attention, cp_gdn
from longctx.distributed.collectives import all_reduce_max
from longctx.distributed.sharding import local_index, num_segments, rank_segments
from longctx.model.varlen import DocLayout, doc_layout


class ContextParallel:
    """Context-parallel settings of a model: the process group of the ranks sharing each row."""

    def __init__(self, group, layout: str = "zigzag"):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.layout = layout
        num_segments(self.size, layout)  # validates the layout name

    def doc_layout(self, cu_seqlens: torch.Tensor | None, batch: int, local_len: int, device) -> DocLayout:
        """The DocLayout of this rank's [batch, local_len] tokens of [batch, local_len * size] rows.

        cu_seqlens (as for a single process) describes the whole rows, so documents that cross a
        rank boundary are known to both sides.
        """
        seq_len = local_len * self.size
        whole = doc_layout(cu_seqlens, batch, seq_len, device)
        index = local_index(seq_len, self.rank, self.size, self.layout).to(device)
        cp = CPLayout(
            ctx=self,
            seq_len=seq_len,
            index=index,
            whole=whole,
            segments=rank_segments(self.rank, self.size, self.layout),
            seg_len=seq_len // num_segments(self.size, self.layout),
        )
        local = DocLayout(batch=batch, seqlen=local_len, max_seqlen=whole.max_seqlen, cp=cp)
        if whole.packed:
            # the whole rows' cu_seqlens: a single-process kernel handed this layout fails on shapes
            # instead of silently treating the slice as complete documents
            local.cu_seqlens, local.bounds = whole.cu_seqlens, whole.bounds
            local.doc_ids = whole.doc_ids.index_select(1, index)
            local.doc_pos = whole.doc_pos.index_select(1, index)
        return local


@dataclass
class CPLayout:
    """One forward's context-parallel view: where this rank's tokens sit in the whole rows."""

    ctx: ContextParallel
    seq_len: int  # T of the whole rows
    index: torch.Tensor  # [T/C] row position of each local token
    whole: DocLayout  # the layout of the whole [B, T] rows
    segments: list[int]  # global segment ids held here, in local order
    seg_len: int
    cache: dict = field(default_factory=dict)

    @property
    def default_positions(self) -> torch.Tensor:
        """Position ids when none are given: position in the document, or in the row."""
        if self.whole.packed:
            return self.whole.doc_pos.index_select(1, self.index)
        return self.index[None]

    def position_limit(self, position_ids: torch.Tensor) -> int:
        """1 + the largest position over all ranks (what dynamic RoPE scales by)."""
        return all_reduce_max(int(position_ids.max()), self.ctx.group) + 1

    def row_bounds(self, row: int) -> list[int]:
        """Document boundaries of one row, in row positions (0 and T included)."""
        key = ("row_bounds", row)
        if key not in self.cache:
            T = self.seq_len
            if not self.whole.packed:
                self.cache[key] = [0, T]
            else:
                lo, hi = row * T, (row + 1) * T
                self.cache[key] = [b - lo for b in self.whole.bounds if lo <= b <= hi]
        return self.cache[key]

    # ---- the layer hooks (see attention.attend and GatedDeltaNet.forward)

    def attend(self, q, k, v, layout: DocLayout, window: int | None, scale: float):
        return cp_attention.attend(q, k, v, layout, window, scale)

    def short_convs(self, inputs, convs, layout: DocLayout, *, fla: bool):
        return cp_gdn.short_convs(inputs, convs, layout, fla=fla)

    def gated_delta_rule(self, q, k, v, g, beta, scale: float, layout: DocLayout, *, fla: bool):
        return cp_gdn.gated_delta_rule(q, k, v, g, beta, scale, layout, fla=fla)
