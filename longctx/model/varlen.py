"""Packed documents: what every layer needs to know about `cu_seqlens`, computed once per forward.

`cu_seqlens` holds cumulative document boundaries over the flattened batch (all B*T tokens), so
[0, 5, 12, 16, 32] with B=2, T=16 is three documents in row 0 and one filling row 1. Every row
boundary (a multiple of T) must be one of the boundaries: no document spans two rows. That is
what lets attention keep its [B, T] layout while the GDN kernels see one flat sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from longctx.model.hostcopy import device_tensor


@dataclass
class DocLayout:
    batch: int
    seqlen: int
    # None when every row is one document: plain causal everywhere, no masks needed
    cu_seqlens: torch.Tensor | None = None  # int32, on the model's device
    bounds: list[int] | None = None  # host copy of cu_seqlens
    max_seqlen: int = 0
    doc_ids: torch.Tensor | None = None  # [B, T] int32 document index of each token
    doc_pos: torch.Tensor | None = None  # [B, T] int64 position of each token inside its document
    cache: dict = field(default_factory=dict)  # per-forward masks shared by layers (see attention.py)
    # Context parallel: this rank holds a slice of each row and `cp` (longctx.distributed.context.CPLayout)
    # says which and how layers exchange tokens; None in a single process.
    cp: Any = None

    @property
    def packed(self) -> bool:
        return self.cu_seqlens is not None

    def cu_seqlens_cpu(self) -> torch.Tensor:
        return torch.tensor(self.bounds, dtype=torch.long)

    def fla_cu_seqlens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int64 cu_seqlens on the device, int64 host copy), made once per forward. fla memoises
        its chunk indices by tensor identity, so every layer (and the recomputation in backward)
        must hand it the same objects: a fresh `.long()` per call misses that cache each time."""
        if "fla_cu_seqlens" not in self.cache:
            self.cache["fla_cu_seqlens"] = (self.cu_seqlens.long(), self.cu_seqlens_cpu())
        return self.cache["fla_cu_seqlens"]


def doc_layout(cu_seqlens: torch.Tensor | None, batch: int, seqlen: int, device: torch.device) -> DocLayout:
    """Validate cu_seqlens against a [batch, seqlen] input and derive per-token document info."""
    layout = DocLayout(batch=batch, seqlen=seqlen, max_seqlen=seqlen)
    if cu_seqlens is None:
        return layout
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.is_floating_point():
        raise ValueError("cu_seqlens must be a 1-D integer tensor of document boundaries over the flattened batch")
    total = batch * seqlen
    bounds = [int(b) for b in cu_seqlens.tolist()]
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != total:
        raise ValueError(
            f"cu_seqlens must start at 0 and end at batch*seqlen={total}, got {bounds[:3]}...{bounds[-2:]}"
        )
    if any(b > a for a, b in zip(bounds[1:], bounds[:-1], strict=True)):
        raise ValueError("cu_seqlens must be non-decreasing")
    bounds = sorted(set(bounds))  # empty documents carry no tokens; kernels dislike them
    rows = list(range(0, total + 1, seqlen))
    present = set(bounds)
    missing = [r for r in rows if r not in present]
    if missing:
        raise ValueError(
            f"cu_seqlens must contain every row boundary (multiples of seqlen={seqlen}); missing {missing[:4]}"
        )
    if bounds == rows:
        return layout  # one document per row: identical to the unpacked case
    cu = device_tensor(bounds, device, torch.int32)
    token = torch.arange(total, device=device, dtype=torch.int32)
    doc_ids = torch.searchsorted(cu[1:], token, right=True).to(torch.int32)
    doc_pos = (token - cu[doc_ids]).long()
    layout.cu_seqlens = cu
    layout.bounds = bounds
    layout.max_seqlen = max(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    layout.doc_ids = doc_ids.view(batch, seqlen)
    layout.doc_pos = doc_pos.view(batch, seqlen)
    return layout
