"""Collectives that autograd can see through, for the context-parallel layers.

Only the all-gather is needed: every rank contributes its slice and receives all of them, and
in the backward each rank's slice gets the sum, over ranks, of the gradients flowing into it
(a reduce-scatter). That is what lets a rank's loss reach parameters through keys, values,
conv halos and GDN states that other ranks computed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

# torch >= 2.13 names them *_single (the *_tensor names warn); older releases only have *_tensor
_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_flat = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        n = dist.get_world_size(group)
        flat = x.contiguous().view(-1)
        out = flat.new_empty(n * flat.numel())  # flat buffers: backends disagree on n-d shapes
        _gather_flat(out, flat, group=group)
        return out.view(n, *x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        flat = grad.contiguous().view(-1)
        out = flat.new_empty(flat.numel() // grad.shape[0])
        _reduce_scatter_flat(out, flat, op=dist.ReduceOp.SUM, group=ctx.group)
        return out.view(grad.shape[1:]), None


def all_gather(x: torch.Tensor, group) -> torch.Tensor:
    """[*shape] on each rank -> [group size, *shape] in group-rank order, differentiable."""
    return _AllGather.apply(x, group)


def all_reduce_sum(x: torch.Tensor, group=None) -> torch.Tensor:
    """Sum over the group (no autograd); a no-op without a process group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
    return x


def all_reduce_max(value: int, group=None) -> int:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=_comm_device(group))
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return int(t.item())


def _comm_device(group) -> torch.device:
    # NCCL only moves CUDA tensors; a gloo group only CPU ones ("cpu:gloo,cuda:nccl" takes either)
    if "nccl" in str(dist.get_backend(group)) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
