"""(dp, cp) training on 2 and 3 gloo ranks equals one process on the same global batch.

Context parallel (cp = 2, 3): hidden states, loss and every gradient, for Olmo Hybrid (GDN + full
attention) and Olmo 3 style (sliding + full) models whose 5 heads neither degree divides, with
packed documents crossing segment boundaries (two end exactly on one) and with document masking
off, zigzag and contiguous layouts, with activation checkpointing. Data parallel (dp = 2, FSDP2 on gloo): gradients and
an AdamW
step. Resharding: train a step at (dp, cp) = (1, 2), save with DCP, load at (2, 1), train on: the
weights equal two single-process steps.

All scenarios of one world size run in one spawn (module fixture); each test checks its own.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from test_distributed_util import (
    SEQ,
    assert_close,
    check,
    full_grads,
    loss_sum,
    make_batch,
    reference_step,
    run_scenarios,
    tiny_model,
)

CP_CASES = {  # name: (kind, packed, layout)
    "hybrid-packed": ("hybrid", True, "zigzag"),
    "hybrid-nodocmask": ("hybrid", False, "zigzag"),
    "olmo3-packed": ("olmo3", True, "zigzag"),
    "olmo3-nodocmask": ("olmo3", False, "zigzag"),
    "hybrid-packed-contiguous": ("hybrid", True, "contiguous"),
    "hybrid-packed-checkpointing": ("hybrid", True, "zigzag"),
}
CHECKPOINTED = {"hybrid-packed-checkpointing"}
LR = 1e-2
# AdamW moves a weight by lr * m / (sqrt(v) + eps): with the usual eps = 1e-8, a gradient that is
# ~0 in one process and fp32 noise (1e-9) in another moves by up to ~lr (seen: 1.7e-3, then the two
# runs drift apart), which says nothing about the parallelism. A large eps damps that; the optimizer
# state (exp_avg, exp_avg_sq, step) is still all there to shard and reshard.
ADAM_EPS = 1e-3
STEP_ATOL = 2e-5


def _cp_case(name, rank, world, out_dir):
    from longctx.distributed import all_reduce_sum, init_distributed, local_index, parallelize

    kind, packed, layout = CP_CASES[name]
    batch = make_batch(packed)
    _, ref_hidden, ref_total, ref_grads = reference_step(kind, batch)
    count = int((batch["labels"] != -100).sum())

    dims = init_distributed(1, world, device="cpu", cp_layout=layout)
    model = tiny_model(kind)
    # recomputation in the backward repeats the layers' collectives: they must still line up
    model.gradient_checkpointing = name in CHECKPOINTED
    model = parallelize(model, dims)
    b = dims.shard_batch(batch)
    assert b["input_ids"].shape == (2, SEQ // world)
    hidden = model.forward_hidden(b["input_ids"], b["position_ids"], b["cu_seqlens"])
    total = loss_sum(model, hidden, b["labels"])
    (total / count).backward()

    idx = local_index(SEQ, dims.cp_rank, world, layout)
    assert_close("hidden", hidden.detach(), ref_hidden[:, idx])
    assert_close("loss", all_reduce_sum(total.detach()), ref_total)
    grads = full_grads(model)
    for pname, want in ref_grads.items():
        assert_close(f"grad {pname}", grads[pname], want)


def _default_positions(rank, world, out_dir):
    """Without position_ids the CP model derives the positions one process would."""
    from longctx.distributed import init_distributed, local_index, parallelize

    batch = make_batch(True)
    with torch.no_grad():
        want = tiny_model("olmo3").forward_hidden(batch["input_ids"], cu_seqlens=batch["cu_seqlens"])
        dims = init_distributed(1, world, device="cpu")
        model = parallelize(tiny_model("olmo3"), dims)
        b = dims.shard_batch(batch)
        got = model.forward_hidden(b["input_ids"], cu_seqlens=b["cu_seqlens"])
    assert_close("default positions", got, want[:, local_index(SEQ, dims.cp_rank, world)])


def _flex_forward(rank, world, out_dir):
    """The FlexAttention CP path (CUDA's default) on CPU: forward only, CPU flex has no backward."""
    from longctx.distributed import init_distributed, local_index, parallelize
    from longctx.model import attention

    for packed in (True, False):
        batch = make_batch(packed)
        with torch.no_grad():
            want = tiny_model("olmo3").forward_hidden(batch["input_ids"], batch["position_ids"], batch["cu_seqlens"])
            dims = init_distributed(1, world, device="cpu")
            model = parallelize(tiny_model("olmo3"), dims)
            b = dims.shard_batch(batch)
            attention.BACKEND = "flex"
            try:
                got = model.forward_hidden(b["input_ids"], b["position_ids"], b["cu_seqlens"])
            finally:
                attention.BACKEND = None
        assert_close(f"flex packed={packed}", got, want[:, local_index(SEQ, dims.cp_rank, world)])


def _adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1, eps=ADAM_EPS)


def _train_step(model, opt, batch, dims=None, check_grads=None):
    """One optimizer step on a global batch; returns (summed loss over all ranks, grad norm)."""
    from longctx.distributed import all_reduce_sum, grad_norm_value

    count = int((batch["labels"] != -100).sum())
    b = dims.shard_batch(batch) if dims is not None else batch
    hidden = model.forward_hidden(b["input_ids"], b["position_ids"], b["cu_seqlens"])
    total = loss_sum(model, hidden, b["labels"])
    (total / count).backward()
    if check_grads is not None:
        grads = full_grads(model)
        for name, want in check_grads.items():
            assert_close(f"grad {name}", grads[name], want)
    norm = grad_norm_value(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9))
    opt.step()
    opt.zero_grad(set_to_none=True)
    total = total.detach()
    return float(all_reduce_sum(total) if dims is not None else total), norm


def _full_params(model) -> dict:
    from longctx.distributed import full_state_dict

    return full_state_dict(model, all_ranks=True)


def _dp(packed, rank, world, out_dir):
    from longctx.distributed import init_distributed, parallelize

    batch = make_batch(packed, rows=2)
    ref = tiny_model("hybrid")
    ref_grads = reference_step("hybrid", batch)[3]
    ref_loss, ref_norm = _train_step(ref, _adamw(ref), batch)

    dims = init_distributed(2, 1, device="cpu")
    assert dims.dp_rank == rank and dims.cp_rank == 0
    model = parallelize(tiny_model("hybrid"), dims)
    assert type(next(model.parameters())).__name__ == "DTensor"  # really sharded
    loss, norm = _train_step(model, _adamw(model), batch, dims, check_grads=ref_grads)
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), (loss, ref_loss)
    assert abs(norm - ref_norm) <= 1e-5 * ref_norm, (norm, ref_norm)
    got = _full_params(model)
    for name, want in ref.state_dict().items():
        assert_close(f"param {name} after a step", got[name], want, atol=STEP_ATOL)


def _full_optim(model, opt) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))


def _reshard(rank, world, out_dir):
    """Step at (dp, cp) = (1, 2), DCP save; load at (2, 1) into another init: weights and AdamW state
    come back bit for bit, and the next step equals one process's step from that state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_optimizer_state_dict, set_state_dict

    from longctx.distributed import init_distributed, parallelize

    batches = [make_batch(True, seed=0), make_batch(False, seed=1)]
    path = f"{out_dir}/ckpt"
    dims = init_distributed(1, 2, device="cpu")
    a = parallelize(tiny_model("hybrid"), dims)
    opt_a = _adamw(a)
    _train_step(a, opt_a, batches[0], dims)
    msd, osd = get_state_dict(a, opt_a)
    dcp.save({"model": msd, "optimizer": osd}, checkpoint_id=path)
    saved_params, saved_optim = _full_params(a), _full_optim(a, opt_a)

    dims = init_distributed(2, 1, device="cpu")
    b = parallelize(tiny_model("hybrid", seed=1), dims)
    opt_b = _adamw(b)
    msd, osd = get_state_dict(b, opt_b)
    state = {"model": msd, "optimizer": osd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(b, opt_b, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    loaded_params, loaded_optim = _full_params(b), _full_optim(b, opt_b)
    for name, want in saved_params.items():
        assert torch.equal(loaded_params[name], want), f"{name} changed in the save/load round trip"
    for name, want in saved_optim["state"].items():
        for key, value in want.items():
            assert torch.equal(loaded_optim["state"][name][key], value), f"optimizer {key} of {name} changed"

    ref = tiny_model("hybrid", seed=2)
    ref.load_state_dict(saved_params)
    opt_ref = _adamw(ref)
    set_optimizer_state_dict(ref, opt_ref, saved_optim)
    _train_step(ref, opt_ref, batches[1])
    _train_step(b, opt_b, batches[1], dims)
    got = _full_params(b)
    for name, want in ref.state_dict().items():
        assert_close(f"param {name} after resuming at (2, 1)", got[name], want, atol=STEP_ATOL)


SCENARIOS = {f"cp-{n}": partial(_cp_case, n) for n in CP_CASES}
SCENARIOS |= {
    "cp-default-positions": _default_positions,
    "cp-flex-forward": _flex_forward,
    "dp-packed": partial(_dp, True),
    "dp-nodocmask": partial(_dp, False),
    "reshard": _reshard,
}
WORLD3 = ["cp-hybrid-packed", "cp-hybrid-nodocmask", "cp-olmo3-packed", "cp-olmo3-nodocmask"]


@pytest.fixture(scope="module")
def world2(tmp_path_factory):
    return run_scenarios(2, SCENARIOS, tmp_path_factory.mktemp("world2"))


@pytest.fixture(scope="module")
def world3(tmp_path_factory):
    return run_scenarios(3, SCENARIOS, tmp_path_factory.mktemp("world3"), WORLD3)


@pytest.mark.parametrize("case", list(CP_CASES))
def test_cp2_matches_one_process(world2, case):
    check(world2, f"cp-{case}", 2)


@pytest.mark.parametrize("case", [n[3:] for n in WORLD3])
def test_cp3_matches_one_process(world3, case):
    check(world3, f"cp-{case}", 3)


def test_cp_default_positions(world2):
    check(world2, "cp-default-positions", 2)


def test_cp_flex_backend_forward(world2):
    check(world2, "cp-flex-forward", 2)


@pytest.mark.parametrize("case", ["packed", "nodocmask"])
def test_dp2_fsdp_matches_one_process(world2, case):
    check(world2, f"dp-{case}", 2)


def test_checkpoint_reshards_from_cp2_to_dp2(world2):
    check(world2, "reshard", 2)
