"""Context parallel on 2 GPUs (NCCL): fla's CP kernels for GDN and compiled FlexAttention for
attention, against the same model on one GPU. Run on a machine with >= 2 GPUs:

    python -m pytest -s -m gpu tests/test_distributed_gpu.py

bf16 autocast as in training, so the comparison is a relative error (a missing state hand-over or
halo is O(1)); the torch CP path (LONGCTX_CP_GDN=torch) is checked the same way.
"""

from __future__ import annotations

import os

import pytest
import torch
from test_distributed_util import check, full_grads, loss_sum, make_batch, run_scenarios, tiny_model

pytestmark = pytest.mark.gpu
SEQ_GPU = 2048
DOCS_GPU = [[700, 1, 900, 447]]  # crosses the zigzag boundaries at 512, 1024, 1536
TOL = 3e-2


def rel_err(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _step(model, batch, count, dims=None):
    dev = torch.device("cuda", torch.cuda.current_device())
    b = dims.shard_batch(batch) if dims is not None else batch
    cu = b["cu_seqlens"]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        hidden = model.forward_hidden(
            b["input_ids"].to(dev), b["position_ids"].to(dev), None if cu is None else cu.to(dev)
        )
        total = loss_sum(model, hidden, b["labels"].to(dev))
    (total / count).backward()
    return hidden.detach(), total.detach()


def _gpu_cp(gdn_path, rank, world, out_dir):
    from longctx.distributed import all_reduce_sum, init_distributed, local_index, parallelize

    os.environ["LONGCTX_CP_GDN"] = gdn_path
    dev = torch.device("cuda", rank)
    for packed in (True, False):
        batch = make_batch(packed, rows=1, docs=DOCS_GPU, seq=SEQ_GPU)
        count = int((batch["labels"] != -100).sum())
        ref = tiny_model("hybrid").to(dev)
        ref_hidden, ref_total = _step(ref, batch, count)
        ref_grads = {n: p.grad for n, p in ref.named_parameters()}

        dims = init_distributed(1, world, device="cuda")
        model = parallelize(tiny_model("hybrid").to(dev), dims)
        hidden, total = _step(model, batch, count, dims)
        idx = local_index(SEQ_GPU, dims.cp_rank, world).to(dev)
        assert rel_err(hidden, ref_hidden[:, idx]) < TOL
        assert rel_err(all_reduce_sum(total), ref_total) < TOL
        grads = full_grads(model)
        for name, want in ref_grads.items():
            assert rel_err(grads[name], want) < TOL, name


def test_cp2_on_gpus_fla_and_torch_paths(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    pytest.importorskip("fla.ops.cp", reason="fla with context parallel kernels (fla-core >= 0.6) is not installed")
    from functools import partial

    scenarios = {"fla": partial(_gpu_cp, "fla"), "torch": partial(_gpu_cp, "torch")}
    run_scenarios(2, scenarios, tmp_path, backend="cpu:gloo,cuda:nccl")
    for name in scenarios:
        check(tmp_path, name, 2)
