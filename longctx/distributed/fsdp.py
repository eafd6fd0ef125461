"""Wrap a HybridLM for (dp, cp) training: context parallel layers, then FSDP2 over all ranks.

Gradient convention: each rank backpropagates sum(its tokens' loss) / (tokens of the whole global
batch), and FSDP *sums* the gradients over all dp * cp ranks (divide factor 1). That equals the
single-process gradient of the global batch exactly, whatever the token counts per rank (packed
documents leave unequal counts), and under context parallelism the sum is required anyway: a
rank's gradient holds only the part of the loss that flowed through its tokens.

Every FSDP unit is a decoder block; the root keeps the embedding, final norm and lm head together
(tied weights must live in one unit) and is not resharded after forward, so after
`forward_hidden` the root's parameters — the lm head included — are plain unsharded tensors that
a loss outside the model can use (`head_weight`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from longctx.distributed.context import ContextParallel
from longctx.distributed.mesh import ParallelDims


def parallelize(
    model: nn.Module,
    dims: ParallelDims,
    *,
    reshard_after_forward: bool = True,
    mixed_precision: torch.dtype | None = None,
) -> nn.Module:
    """Install context parallelism (cp > 1) and FSDP2 (world > 1) on `model`, in place; returns it.

    Call after the model is on its device and before building the optimizer.
    mixed_precision: parameter dtype for compute (e.g. torch.bfloat16); gradients are reduced in
    float32. Default None: parameters stay as they are (the trainer's autocast decides).
    """
    if dims.cp > 1:
        model.context_parallel = ContextParallel(dims.cp_group, dims.cp_layout)
    if not dims.distributed:
        return model

    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    kwargs = {"mesh": dims.fsdp_mesh}
    if mixed_precision is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=mixed_precision, reduce_dtype=torch.float32)
    for block in model.model.layers:
        fully_shard(block, reshard_after_forward=reshard_after_forward, **kwargs)
    fully_shard(model, reshard_after_forward=False, **kwargs)
    # the trainer calls forward_hidden, not forward: FSDP must unshard/reshard around it too
    register_fsdp_forward_method(model, "forward_hidden")
    sum_only = "nccl" not in str(dist.get_backend())  # gloo has no pre-multiplied sum
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            if sum_only:
                m.set_force_sum_reduction_for_comms(True)
    return model


def build_on_rank0(build, dims: ParallelDims, build_meta=None) -> nn.Module:
    """The model as the trainer's `parallelize_from_rank0` wants it: `build()` on rank 0 (the one
    whose weights count), `build_meta()` (default: `build`) under the meta device on the others:
    the same architecture, no memory, no disk reads. A UsageError on rank 0 (a missing or corrupt
    checkpoint) is raised on every rank, so that none of them waits in a collective for a rank that
    has quit."""
    from longctx.distributed.collectives import all_reduce_max
    from longctx.errors import UsageError

    if not dims.distributed:
        return build()
    model, error = None, None
    if dims.is_main:
        try:
            model = build()
        except UsageError as e:
            error = e
    if all_reduce_max(int(error is not None)):
        raise error if error is not None else UsageError("rank 0 could not load the model (see its error)")
    if model is None:
        with torch.device("meta"):
            model = (build_meta or build)()
    return model


def parallelize_from_rank0(model: nn.Module, dims: ParallelDims, **kwargs) -> nn.Module:
    """`parallelize`, for a model whose weights only rank 0 has to hold (the others may build it on
    the meta device, see build_on_rank0): shard, allocate only this rank's shards on its device,
    and fill them from rank 0's tensors by broadcast. Host memory per node holds one copy of the
    model instead of one per rank (28 GB per rank for a 7B in fp32), and only rank 0 reads the
    checkpoint. A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = {k: v.detach() for k, v in model.state_dict().items()} if dims.is_main else {}
    parallelize(model, dims, **kwargs)
    model.to_empty(device=dims.device)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model


def head_weight(model: nn.Module) -> torch.Tensor:
    """The lm head matrix as a loss outside the model must use it: call after forward_hidden.

    Under FSDP the module attribute is the unsharded parameter only between the root's forward
    and its backward; a tensor taken before the forward would be the local shard (a DTensor).
    """
    w = model.lm_head.weight
    if type(w).__name__ == "DTensor":
        raise RuntimeError("lm_head.weight is still sharded: take it after model.forward_hidden(...)")
    return w


def grad_norm_value(norm: torch.Tensor) -> float:
    """float() of clip_grad_norm_'s result, which is a DTensor when the parameters are sharded."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def full_state_dict(model: nn.Module, *, all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """Unsharded CPU state dict, HF key names; a collective (every rank calls it).

    Only rank 0 gets the tensors (others an empty dict) unless all_ranks: gathering on one rank
    at a time keeps a 7B export within host memory. For the HF export at the end of a run, rank 0
    loads it into a plain HybridLM and saves that.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not any(type(p).__name__ == "DTensor" for p in model.parameters()):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    options = StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks)
    state = get_model_state_dict(model, options=options)
    return {k: v.cpu() for k, v in state.items()}


def unsharded_copy(model: nn.Module) -> nn.Module | None:
    """A plain (unwrapped, CPU) HybridLM with the trained weights on rank 0, None elsewhere.

    A collective: every rank calls it. What the HF export at the end of a run saves.
    """
    if not any(type(p).__name__ == "DTensor" for p in model.parameters()):
        return model
    state = full_state_dict(model)
    if not dist.is_initialized() or dist.get_rank() != 0:
        return None
    from longctx.model import HybridLM, hf

    with torch.device("meta"):
        copy = HybridLM(model.config)
    hf.load_into(copy, state)
    copy.tie_weights()
    copy._source_dir = getattr(model, "_source_dir", None)
    return copy
