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


def profile_once(fn, out_dir, label: str, device, rows: int = 30) -> dict:
    """Run fn() once under torch.profiler: write the top ops by self time (device time on CUDA) to
    OUT/profile_<label>.txt and a gzipped Chrome trace beside it, and return the wall time against
    the summed kernel time. Kernel time far below wall time means the step waits on the host
    (launches, Python, syncs); close to it means the kernels themselves are the cost."""
    import gzip
    import shutil
    import time
    from pathlib import Path

    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        wall_ms = (time.perf_counter() - t0) * 1e3
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    busy_ms = sum(getattr(e, key, 0.0) for e in events) / 1e3 if cuda else None
    top_level_ops = sum(1 for e in prof.events() if e.cpu_parent is None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = (f"{label}: wall {wall_ms:.1f} ms"
            + (f", kernels {busy_ms:.1f} ms ({100 * busy_ms / wall_ms:.0f}% of wall)" if cuda else "")
            + f", {top_level_ops} top-level host ops\n")
    (out / f"profile_{label}.txt").write_text(head + events.table(sort_by=key, row_limit=rows) + "\n")
    trace = out / f"profile_{label}.trace.json"
    prof.export_chrome_trace(str(trace))
    with open(trace, "rb") as src, gzip.open(f"{trace}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace.unlink()
    return {"wall_ms": wall_ms, "kernel_ms": busy_ms, "host_ops": top_level_ops, "file": f"profile_{label}.txt"}
