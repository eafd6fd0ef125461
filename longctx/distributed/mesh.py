"""Process groups for `torchrun ... -m longctx extend --dp D --cp C`: a (dp, cp) device mesh.

Ranks are laid out dp-major, cp innermost (rank = dp_rank * cp + cp_rank), so the ranks that
exchange keys/values every layer are neighbours, i.e. on the same node. Parameters are sharded
(FSDP2) over all D*C ranks: the cp ranks of a row hold the same weights, so they can share the
sharding; gradients are summed over all of them (see fsdp.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from longctx.distributed.launcher import die_with_launcher
from longctx.distributed.sharding import check_parallel, shard_batch


@dataclass
class ParallelDims:
    dp: int = 1
    cp: int = 1
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    cp_layout: str = "zigzag"
    mesh: object = None  # DeviceMesh ("dp", "cp"); None in a single process
    fsdp_mesh: object = None  # 1-D DeviceMesh over all ranks (what FSDP shards over)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dp_rank(self) -> int:
        return self.rank // self.cp

    @property
    def cp_rank(self) -> int:
        return self.rank % self.cp

    @property
    def cp_group(self):
        return self.mesh.get_group("cp") if self.mesh is not None and self.cp > 1 else None

    def shard_batch(self, batch: dict) -> dict:
        """This rank's rows (dp) and tokens (cp) of a global batch; identity in a single process."""
        if not self.distributed:
            return batch
        return shard_batch(
            batch, dp_rank=self.dp_rank, dp=self.dp, cp_rank=self.cp_rank, cp=self.cp, layout=self.cp_layout
        )

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def world_from_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as torchrun sets them; (0, 0, 1) outside torchrun."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1))


def init_distributed(
    dp: int | None = None,
    cp: int = 1,
    *,
    device: str | torch.device | None = None,
    cp_layout: str = "zigzag",
    timeout_s: float | None = None,
) -> ParallelDims:
    """Join torchrun's process group and build the (dp, cp) mesh; dp=None takes world_size // cp.

    device: "cuda" (one GPU per process, LOCAL_RANK; NCCL, with gloo for CPU tensors) or "cpu"
    (gloo). Default: cuda when available. Raises UsageError when dp * cp != WORLD_SIZE.
    A single process (no torchrun, dp = cp = 1) gets ParallelDims() and no process group.
    """
    rank, local_rank, world = world_from_env()
    if dp is None:
        dp = max(world // cp, 1) if isinstance(cp, int) and cp >= 1 else cp  # a bad cp is reported below
    check_parallel(dp, cp, world_size=world, cp_layout=cp_layout)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if world == 1:
        return ParallelDims(dp=1, cp=1, device=dev, cp_layout=cp_layout)
    die_with_launcher()  # a hard-killed torchrun must not leave this worker holding its GPU
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)

    from datetime import timedelta

    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
    mesh = init_device_mesh(dev.type, (dp, cp), mesh_dim_names=("dp", "cp"))
    fsdp_mesh = init_device_mesh(dev.type, (world,), mesh_dim_names=("dp_cp",))
    return ParallelDims(
        dp=dp, cp=cp, rank=rank, world_size=world, device=dev, cp_layout=cp_layout, mesh=mesh, fsdp_mesh=fsdp_mesh
    )


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
