"""Multi-GPU training: (dp, cp) device mesh, FSDP2, context parallelism for HybridLM.

    dims = init_distributed(dp, cp)              # torchrun env -> process groups; UsageError if dp*cp != N
    model = parallelize(model.to(dims.device), dims)
    for batch in loader:                         # the same global batch on every rank
        b = dims.shard_batch(batch)              # this rank's rows (dp) and tokens (cp)
        hidden = model.forward_hidden(b["input_ids"], b["position_ids"], b["cu_seqlens"])
        loss = ce_sum(hidden, head_weight(model), b["labels"]) / global_token_count
        loss.backward()                          # FSDP sums gradients over all ranks

See docs/multi_gpu.md.
"""

from longctx.distributed.args import add_parallel_arguments, parallel_from_args
from longctx.distributed.collectives import all_gather, all_reduce_sum
from longctx.distributed.context import ContextParallel
from longctx.distributed.fsdp import (
    build_on_rank0,
    full_state_dict,
    grad_norm_value,
    head_weight,
    parallelize,
    parallelize_from_rank0,
    unsharded_copy,
)
from longctx.distributed.mesh import ParallelDims, destroy_distributed, init_distributed, world_from_env
from longctx.distributed.sharding import CP_LAYOUTS, check_parallel, local_index, shard_batch

__all__ = [
    "CP_LAYOUTS",
    "ContextParallel",
    "ParallelDims",
    "add_parallel_arguments",
    "all_gather",
    "all_reduce_sum",
    "build_on_rank0",
    "parallelize_from_rank0",
    "check_parallel",
    "destroy_distributed",
    "full_state_dict",
    "grad_norm_value",
    "head_weight",
    "init_distributed",
    "local_index",
    "parallel_from_args",
    "parallelize",
    "shard_batch",
    "unsharded_copy",
    "world_from_env",
]
