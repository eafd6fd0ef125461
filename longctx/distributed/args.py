"""The --dp / --cp flags of `longctx pretrain` and `longctx extend`, checked before anything is written.

    torchrun --nproc-per-node 8 -m longctx extend ... --dp 4 --cp 2

--dp defaults to (processes / --cp); a single process needs neither flag.
"""

from __future__ import annotations

import argparse

from longctx.distributed.mesh import ParallelDims, init_distributed, world_from_env
from longctx.distributed.sharding import CP_LAYOUTS, check_parallel
from longctx.errors import UsageError


def add_parallel_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-GPU (under torchrun)")
    g.add_argument("--dp", help="data-parallel degree (FSDP2); default: processes / --cp")
    g.add_argument("--cp", help="context-parallel degree: each sequence is split over this many GPUs (default 1)")
    g.add_argument(
        "--cp-layout",
        help=f"how a sequence is split: {', '.join(CP_LAYOUTS)} (default zigzag: balances causal attention work)",
    )


def _int_flag(value, flag: str) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: need an integer >= 1") from None


def parallel_from_args(args: argparse.Namespace, stages, model_config, device: str | None) -> ParallelDims:
    """Validate --dp/--cp against the process count, every stage's (seq_len, batch_size) and the
    model, then join the process group. `stages`: objects with .seq_len and .batch_size (global
    sequences per micro-batch). Raises UsageError before any process group exists."""
    cp = _int_flag(getattr(args, "cp", None), "--cp")
    cp = 1 if cp is None else cp
    layout = getattr(args, "cp_layout", None) or "zigzag"
    if layout not in CP_LAYOUTS:
        raise UsageError(f"--cp-layout {layout!r} unknown; accepted: {', '.join(CP_LAYOUTS)}")
    _, _, world = world_from_env()
    dp = _int_flag(getattr(args, "dp", None), "--dp")
    if cp < 1:
        raise UsageError(f"--cp {cp}: need an integer >= 1")
    if dp is None:
        if world % cp:
            raise UsageError(f"--cp {cp} does not divide the {world} processes started; accepted: a divisor of {world}")
        dp = world // cp
    width = None
    if "linear_attention" in (getattr(model_config, "layer_types", None) or []):
        width = model_config.linear_conv_kernel_dim
    check_parallel(dp, cp, world_size=world, cp_layout=layout)
    for s in stages:
        check_parallel(dp, cp, seq_len=s.seq_len, batch_size=s.batch_size, cp_layout=layout, conv_width=width)
    return init_distributed(dp, cp, device=device, cp_layout=layout)
