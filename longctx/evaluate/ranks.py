"""Data-parallel evaluation: `torchrun --nproc-per-node N -m longctx eval ...` answers RULER on N GPUs.

Every process loads the model on its own GPU (LOCAL_RANK) and walks the same cells in the same order; in
each cell the requests that the journal has not answered are dealt out round-robin, each process generates
its share, and the answers are exchanged (`all_gather_object` over gloo: strings, no tensors), so every
process scores every cell itself. Only rank 0 writes the answer journal, the results file and the log;
the other processes read the journal once at the start, so a rerun (with any number of processes, or
none) resumes from it. lm-eval sees one process (ResumableLM reports rank 0 of 1): it neither splits
the requests nor gathers them itself.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Requests one process generates between exchanges: what an interruption can lose per process (the
# single-process evaluation journals each batch as it is answered instead).
ROUND = 64


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: list) -> list:
        """This process's share of `items` (round-robin, so long and short prompts spread evenly)."""
        return items[self.rank :: self.world]

    def gather(self, obj: Any) -> list:
        """`obj` of every process, in rank order."""
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def from_env() -> Ranks | None:
    """Join torchrun's process group (gloo) and return this process's place; None outside torchrun."""
    import torch.distributed as dist

    from longctx.distributed.launcher import die_with_launcher
    from longctx.distributed.mesh import world_from_env

    rank, _, world = world_from_env()
    if world == 1:
        return None
    die_with_launcher()  # a hard-killed torchrun must not leave this worker holding its GPU
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", rank=rank, world_size=world)
    return Ranks(rank, world)


def device_for(device: str | None) -> str | None:
    """Under torchrun each process takes the GPU of its LOCAL_RANK: `cuda` (or none given, on a GPU machine)
    becomes cuda:LOCAL_RANK; cpu and an explicit cuda:N stay."""
    import torch

    from longctx.distributed.mesh import world_from_env

    _, local, world = world_from_env()
    if world == 1 or device not in (None, "cuda") or not torch.cuda.is_available():
        return device
    torch.cuda.set_device(local)
    return f"cuda:{local}"


@contextmanager
def one_process_to_lm_eval(ranks: Ranks | None):
    """lm-eval's simple_evaluate builds its results only where LOCAL_RANK is 0 (for tensor parallelism, where
    every process holds the same answers); here every process scores every cell itself, so it is told 0."""
    if ranks is None:
        yield
        return
    before = os.environ.get("LOCAL_RANK")
    os.environ["LOCAL_RANK"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LOCAL_RANK", None)
        else:
            os.environ["LOCAL_RANK"] = before


def close() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
