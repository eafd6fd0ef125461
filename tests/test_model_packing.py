"""Packed documents (cu_seqlens): each document's logits equal transformers' on that document alone."""

from __future__ import annotations

import pytest
import torch
from test_model_util import VOCAB, hf_reference, hybrid_config, max_diff, olmo3_config

from longctx.model import HybridLM

TOL = 1e-4
# (batch, seqlen, document lengths row after row): a 70-token document crosses a GDN chunk
# boundary and the sliding window; a 1-token document sits between two others
LAYOUTS = {
    "one-row-3-docs": (1, 116, [70, 1, 45]),
    "two-rows-5-docs": (2, 60, [13, 47, 30, 1, 29]),
}


def _pair(kind, tmp_path):
    ref = hf_reference(hybrid_config() if kind == "olmo_hybrid" else olmo3_config())
    ref.save_pretrained(tmp_path)
    return ref, HybridLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", ["olmo_hybrid", "olmo3"])
def test_packed_equals_documents_alone(kind, layout, tmp_path):
    ref, ours = _pair(kind, tmp_path)
    batch, seqlen, lengths = LAYOUTS[layout]
    flat = torch.randint(0, VOCAB, (batch * seqlen,), generator=torch.Generator().manual_seed(3))
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
    with torch.no_grad():
        packed = ours(flat.view(batch, seqlen), cu_seqlens=cu).reshape(batch * seqlen, -1)
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
            alone = ref(flat[a:b][None]).logits[0]
            assert max_diff(packed[a:b], alone) <= TOL, (a, b)
        unpacked = ours(flat.view(batch, seqlen)).reshape(batch * seqlen, -1)
    assert max_diff(packed, unpacked) > 1e-2  # the boundaries did change something


def test_row_boundaries_only_equals_unpacked(tmp_path):
    _, ours = _pair("olmo_hybrid", tmp_path)
    x = torch.randint(0, VOCAB, (2, 50))
    with torch.no_grad():
        assert torch.equal(ours(x, cu_seqlens=torch.tensor([0, 50, 100], dtype=torch.int32)), ours(x))


def test_explicit_positions_with_packing(tmp_path):
    _, ours = _pair("olmo3", tmp_path)
    x = torch.randint(0, VOCAB, (1, 40))
    cu = torch.tensor([0, 15, 40], dtype=torch.int32)
    restart = torch.cat([torch.arange(15), torch.arange(25)])[None]
    with torch.no_grad():
        default = ours(x, cu_seqlens=cu)
        assert max_diff(ours(x, position_ids=restart, cu_seqlens=cu), default) <= 1e-6
        assert max_diff(ours(x, position_ids=3 * torch.arange(40)[None], cu_seqlens=cu), default) > 1e-3


@pytest.mark.parametrize(
    "cu,match",
    [
        ([0, 30, 70, 100], "row boundar"),  # 50 (end of row 0) missing: a document spans two rows
        ([5, 50, 100], "start at 0"),
        ([0, 50, 90], "end at batch"),
        ([0, 60, 50, 100], "non-decreasing"),
    ],
)
def test_bad_cu_seqlens(cu, match, tmp_path):
    _, ours = _pair("olmo_hybrid", tmp_path)
    with pytest.raises(ValueError, match=match):
        ours(torch.zeros(2, 50, dtype=torch.long), cu_seqlens=torch.tensor(cu, dtype=torch.int32))
    with pytest.raises(ValueError, match="integer"):
        ours(torch.zeros(2, 50, dtype=torch.long), cu_seqlens=torch.tensor([0.0, 50.0, 100.0]))
