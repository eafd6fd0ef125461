"""Pieces both GPU benchmark scripts use: list flags, OOM handling, the versions stamp."""
from __future__ import annotations

import gc
import os
import platform


def parse_list(text: str, kind=str) -> list:
    """'4096,16k' -> [4096, 16384] (kind=int); empty items are dropped."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    return [kind(x[:-1]) * 1024 if kind is int and x.lower().endswith("k") else kind(x) for x in items]


def add_run_args(p) -> None:
    """--budget-s, --out, --seed: how long one device call may measure, where results go."""
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="skip measurements that would start after this many seconds (keeps one call < 10 min)")
    p.add_argument("--out", default=os.environ.get("OUT") or "./bench_out", help="results folder (default $OUT)")
    p.add_argument("--seed", type=int, default=0)


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def versions() -> dict:
    import torch
    import transformers

    v = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("fla", "causal_conv1d", "flash_attn", "tilelang", "triton"):
        try:
            v[name] = getattr(__import__(name), "__version__", "installed")
        except Exception:  # noqa: BLE001 - absent or broken: either way its kernels are not used
            v[name] = None
    return v



def profile_once(fn, out_dir, label: str, device) -> dict:
    """Run fn() once under torch.profiler; longctx.train.profiling.write_summary writes
    OUT/profile_<label>.txt (wall time against kernel time, top ops) and a trace beside it."""
    import time
    from pathlib import Path

    import torch
    from torch.profiler import ProfilerActivity, profile

    from longctx.train.profiling import write_summary

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        wall_ms = (time.perf_counter() - t0) * 1e3
    return write_summary(prof, Path(out_dir), f"profile_{label}", wall_ms, cuda)
