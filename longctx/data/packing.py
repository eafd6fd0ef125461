"""Turn a window of the packed token stream into the batch dict the trainer consumes.

The stream is documents (each ending in EOS) laid end to end. A batch covers B*L consecutive stream
tokens as B rows of L, plus one look-ahead token that is the label of the last position; the next
batch starts right after, so every stream token is an input exactly once.
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = -100  # the label of a position with no loss (torch cross_entropy's default ignore_index)


def pack_batch(tokens: np.ndarray, doc_ids: np.ndarray, batch_size: int, seq_len: int, doc_mask: bool = True) -> dict:
    """tokens, doc_ids: B*L+1 stream tokens and a document id per token (adjacent documents differ).

    Returns input_ids/labels/position_ids LongTensor[B, L], cu_seqlens (int32, over the flattened
    B*L tokens, split at document ends and row ends; None without doc masking) and num_tokens.
    With doc masking, a position whose next token starts another document gets label IGNORE_INDEX and
    positions restart at 0 in every segment; without it, all labels count and positions are 0..L-1.
    """
    n = batch_size * seq_len
    assert tokens.shape == (n + 1,) and doc_ids.shape == (n + 1,)
    inputs = tokens[:n].reshape(batch_size, seq_len)
    labels = tokens[1:].copy()
    if doc_mask:
        labels[doc_ids[1:] != doc_ids[:-1]] = IGNORE_INDEX
        idx = np.arange(n)
        start = idx % seq_len == 0
        start[1:] |= doc_ids[1:n] != doc_ids[: n - 1]
        starts = np.flatnonzero(start)
        positions = idx - np.maximum.accumulate(np.where(start, idx, 0))
        cu_seqlens = torch.from_numpy(np.append(starts, n).astype(np.int32))
    else:
        positions = np.tile(np.arange(seq_len), batch_size)
        cu_seqlens = None
    labels = labels.reshape(batch_size, seq_len)
    return {
        "input_ids": torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.int64)),
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "position_ids": torch.from_numpy(positions.reshape(batch_size, seq_len).astype(np.int64)),
        "cu_seqlens": cu_seqlens,
        "num_tokens": int((labels != IGNORE_INDEX).sum()),
    }
