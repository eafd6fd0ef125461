"""Models under torchrun come from rank 0: the other ranks build on the meta device (no weights in
host memory, no checkpoint read) and receive their shards by broadcast. Gloo, 2 ranks, CPU."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from test_distributed_util import check, run_scenarios, tiny_model


def _from_rank0(kind, rank, world, out_dir):
    from longctx.distributed import build_on_rank0, full_state_dict, init_distributed, parallelize_from_rank0

    dims = init_distributed(2, 1, device="cpu")
    want = tiny_model(kind, seed=3).state_dict()
    # rank 0 builds seed 3's weights; rank 1's builder would make other ones, and must not run for real
    model = build_on_rank0(lambda: tiny_model(kind, seed=3 if rank == 0 else 4), dims)
    assert all(p.is_meta for p in model.parameters()) == (rank == 1)
    parallelize_from_rank0(model, dims)
    assert type(next(model.parameters())).__name__ == "DTensor" and not any(p.is_meta for p in model.parameters())
    got = full_state_dict(model, all_ranks=True)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert torch.equal(got[name], value), name


def _tied(rank, world, out_dir):
    from test_distributed_util import hybrid_config

    from longctx.distributed import build_on_rank0, init_distributed, parallelize_from_rank0
    from longctx.model import HybridLM

    dims = init_distributed(2, 1, device="cpu")
    torch.manual_seed(0)
    model = parallelize_from_rank0(
        build_on_rank0(lambda: HybridLM(hybrid_config(tie_word_embeddings=True)), dims), dims
    )
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still one parameter


def _error_reaches_every_rank(rank, world, out_dir):
    from longctx.distributed import build_on_rank0, init_distributed
    from longctx.errors import UsageError

    dims = init_distributed(2, 1, device="cpu")

    def build():
        raise UsageError("--model x: cannot load its weights (corrupt)")

    with pytest.raises(UsageError, match="corrupt" if rank == 0 else "rank 0 could not load"):
        build_on_rank0(build, dims, build_meta=lambda: tiny_model("hybrid"))


SCENARIOS = {
    "hybrid": partial(_from_rank0, "hybrid"),
    "olmo3": partial(_from_rank0, "olmo3"),
    "tied": _tied,
    "error": _error_reaches_every_rank,
}


@pytest.fixture(scope="module")
def world2(tmp_path_factory):
    return run_scenarios(2, SCENARIOS, tmp_path_factory.mktemp("init2"))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_rank0_weights_reach_every_rank(world2, name):
    check(world2, name, 2)
