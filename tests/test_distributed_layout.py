"""The (dp, cp) layout without processes: token ownership, batch sharding, one-line errors, and the
affine state identity of the gated delta rule that GDN context parallelism rests on."""

from __future__ import annotations

import pytest
import torch
from test_distributed_util import SEQ, make_batch

from longctx.distributed import check_parallel, init_distributed, local_index, shard_batch
from longctx.distributed.sharding import rank_segments
from longctx.errors import UsageError
from longctx.model.gdn import chunk_delta_rule_ref, l2norm


@pytest.mark.parametrize("layout", ["zigzag", "contiguous"])
@pytest.mark.parametrize("cp", [2, 3, 4])
def test_every_token_has_one_owner(cp, layout):
    owned = torch.cat([local_index(48, r, cp, layout) for r in range(cp)])
    assert sorted(owned.tolist()) == list(range(48))


def test_zigzag_holds_chunks_r_and_2c_minus_1_minus_r():
    assert rank_segments(0, 4, "zigzag") == [0, 7]
    assert rank_segments(3, 4, "zigzag") == [3, 4]
    assert local_index(16, 1, 2, "zigzag").tolist() == [4, 5, 6, 7, 8, 9, 10, 11]
    assert local_index(16, 0, 2, "zigzag").tolist() == [0, 1, 2, 3, 12, 13, 14, 15]


@pytest.mark.parametrize("cp", [2, 3, 4])
def test_zigzag_balances_causal_attention_work(cp):
    """Keys a query sees under a causal mask = its position + 1: equal totals per rank with zigzag."""
    T = 24 * cp

    def work(layout):
        return [int((local_index(T, r, cp, layout) + 1).sum()) for r in range(cp)]

    assert len(set(work("zigzag"))) == 1
    contiguous = work("contiguous")
    assert contiguous[-1] > 2 * contiguous[0]  # what zigzag avoids


def test_shard_batch_rows_and_tokens_reassemble():
    batch = make_batch(True)
    dp, cp = 2, 3
    parts = {(d, c): shard_batch(batch, dp_rank=d, dp=dp, cp_rank=c, cp=cp) for d in range(dp) for c in range(cp)}
    for key in ("input_ids", "labels", "position_ids"):
        whole = torch.empty_like(batch[key])
        for (d, c), part in parts.items():
            whole[d : d + 1, local_index(SEQ, c, cp)] = part[key]
        assert torch.equal(whole, batch[key]), key
    # each dp rank's cu_seqlens: its row's documents, from 0 to SEQ
    bounds = batch["cu_seqlens"].tolist()
    for d in range(dp):
        want = [b - d * SEQ for b in bounds if d * SEQ <= b <= (d + 1) * SEQ]
        assert parts[(d, 0)]["cu_seqlens"].tolist() == want
        assert parts[(d, 0)]["cu_seqlens"].dtype == batch["cu_seqlens"].dtype
    assert sum(p["num_tokens"] for p in parts.values()) == batch["num_tokens"]


def test_shard_batch_without_doc_masking():
    batch = make_batch(False)
    part = shard_batch(batch, dp_rank=1, dp=2, cp_rank=1, cp=2)
    assert part["cu_seqlens"] is None
    assert torch.equal(part["input_ids"], batch["input_ids"][1:, local_index(SEQ, 1, 2)])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dp=2, cp=3, world_size=4), r"--dp 2 x --cp 3 = 6 processes, but 4 were started"),
        (dict(dp=1, cp=3, seq_len=100), r"--seq-len 100 is not divisible by 2 x --cp 3 = 6"),
        (dict(dp=1, cp=3, seq_len=100, cp_layout="contiguous"), r"--seq-len 100 is not divisible by --cp 3 = 3"),
        (dict(dp=2, cp=1, batch_size=3), r"--batch-size 3 .* not divisible by --dp 2"),
        (dict(dp=1, cp=4, seq_len=16, conv_width=4), r"leaves 2 tokens per segment, fewer than the 3"),
        (dict(dp=0, cp=1), r"--dp 0: need an integer >= 1"),
        (dict(dp=1, cp=2, seq_len=64, cp_layout="ring"), r"layout 'ring' unknown; accepted: zigzag, contiguous"),
    ],
)
def test_impossible_layouts_are_one_line_usage_errors(kwargs, match):
    with pytest.raises(UsageError, match=match) as e:
        check_parallel(**kwargs)
    assert "\n" not in str(e.value)


def test_possible_layouts_pass():
    check_parallel(2, 4, world_size=8, seq_len=65536, batch_size=2, conv_width=4)
    check_parallel(4, 2, world_size=8, seq_len=8 * 4, batch_size=4, cp_layout="contiguous")


def test_init_distributed_checks_world_size_before_joining(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(UsageError, match="--dp 3 x --cp 2 = 6 processes, but 8 were started"):
        init_distributed(3, 2, device="cpu")


def test_init_distributed_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dims = init_distributed(device="cpu")
    assert (dims.dp, dims.cp, dims.world_size, dims.distributed) == (1, 1, 1, False)
    batch = make_batch(True)
    assert dims.shard_batch(batch) is batch


def _rand_gdn(T, H=2, K=8, V=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = l2norm(torch.randn(1, H, T, K, generator=g)) * K**-0.5
    k = l2norm(torch.randn(1, H, T, K, generator=g))
    v = torch.randn(1, H, T, V, generator=g)
    decay = -0.1 * torch.rand(1, H, T, generator=g)
    beta = 2 * torch.rand(1, H, T, generator=g)  # allow_neg_eigval range
    return q, k, v, decay, beta


def test_delta_rule_state_passing_equals_one_pass():
    """Run [0, 50) then [50, 90) from the carried state == run [0, 90) (chunk 16 cuts both)."""
    q, k, v, g, b = _rand_gdn(90)
    whole = chunk_delta_rule_ref(q, k, v, g, b, chunk=16)
    first, state = chunk_delta_rule_ref(*(x[:, :, :50] for x in (q, k, v, g, b)), chunk=16, output_final_state=True)
    second = chunk_delta_rule_ref(*(x[:, :, 50:] for x in (q, k, v, g, b)), chunk=16, initial_state=state)
    torch.testing.assert_close(torch.cat([first, second], 2), whole, atol=1e-5, rtol=1e-5)


def test_delta_rule_is_affine_in_its_initial_state():
    """The augmented run ([I | 0] start, K zero value columns) gives P, S_loc and o_X such that any
    start state S0 yields S_end = P S0 + S_loc and o = o_X S0 + o_loc — what ranks exchange."""
    q, k, v, g, b = _rand_gdn(40, seed=1)
    H, K, V = 2, 8, 6
    S0 = torch.randn(1, H, K, V, generator=torch.Generator().manual_seed(2))
    want_o, want_S = chunk_delta_rule_ref(q, k, v, g, b, chunk=16, initial_state=S0, output_final_state=True)
    start = torch.cat([torch.eye(K).expand(1, H, K, K), torch.zeros(1, H, K, V)], -1)
    v_aug = torch.cat([torch.zeros(1, H, 40, K), v], -1)
    o, state = chunk_delta_rule_ref(q, k, v_aug, g, b, chunk=16, initial_state=start, output_final_state=True)
    P, S_loc = state.split([K, V], -1)
    torch.testing.assert_close(P @ S0 + S_loc, want_S, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o[..., :K] @ S0 + o[..., K:], want_o, atol=1e-5, rtol=1e-5)
