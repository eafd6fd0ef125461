"""Pieces both GPU benchmark scripts use: list flags, OOM handling, the versions stamp."""

from __future__ import annotations

import gc
import os
import platform
import sys


def parse_list(text: str) -> list[str]:
    """'a,b,,c' -> ['a', 'b', 'c']: empty items are dropped."""
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_lengths(text: str, flag: str = "--lengths") -> list[int]:
    """'4096,16k' -> [4096, 16384] through longctx.lengths; a bad item exits 2 with one line, as the CLI does."""
    from longctx.errors import UsageError
    from longctx.lengths import parse_lengths as parse

    try:
        return parse(text, flag)
    except UsageError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)


def length_arg(text: str) -> int:
    """argparse type for one length flag: '64k' -> 65536 through longctx.lengths; a bad value is argparse's
    one-line usage error (exit 2)."""
    import argparse

    from longctx.errors import UsageError
    from longctx.lengths import parse_length

    try:
        return parse_length(text, "")
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None


def add_run_args(p) -> None:
    """--budget-s, --out, --seed: how long one device call may measure, where results go."""
    p.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="skip measurements that would start after this many seconds (keeps one call < 10 min)",
    )
    p.add_argument("--out", default=os.environ.get("OUT") or "./bench_out", help="results folder (default $OUT)")
    p.add_argument("--seed", type=int, default=0)


def add_fused_arg(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--fused-elementwise",
        action="store_true",
        help="ours: require fla's fused RMSNorm and SwiGLU kernels (longctx/model/fused.py; the default "
        "uses them on CUDA when fla is installed)",
    )
    g.add_argument(
        "--plain-elementwise",
        action="store_true",
        help="ours: plain-PyTorch RMSNorm and SwiGLU (the ablation against the fused kernels)",
    )
    r = p.add_mutually_exclusive_group()
    r.add_argument(
        "--fused-rope",
        action="store_true",
        help="ours: LONGCTX_FUSED_ROPE=1, RoPE on q/k in one Triton kernel each way (longctx/model/rope_kernel.py; "
        "the default on CUDA with Triton)",
    )
    r.add_argument(
        "--plain-rope",
        action="store_true",
        help="ours: LONGCTX_FUSED_ROPE=0, RoPE through PyTorch ops (the ablation against the kernel)",
    )


def add_varlen_arg(p, what: str) -> None:
    p.add_argument(
        "--varlen-attention",
        action="store_true",
        help=f"ours: LONGCTX_VARLEN_ATTENTION=1, {what} through torch's varlen flash-attention",
    )


def apply_varlen_arg(args) -> None:
    """--varlen-attention: set the switch attention.select_backend reads at each call."""
    if args.varlen_attention:
        os.environ["LONGCTX_VARLEN_ATTENTION"] = "1"


def apply_fused_arg(args) -> str:
    """Set longctx's fused-elementwise switch from --fused/--plain-elementwise; what ours uses, for the JSON.
    A bad LONGCTX_* switch exits 2 with one line here, as the CLI does (longctx.env)."""
    from longctx import env
    from longctx.errors import UsageError
    from longctx.model import fused

    try:
        env.check()
    except UsageError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)

    if args.fused_rope or args.plain_rope:
        os.environ["LONGCTX_FUSED_ROPE"] = "1" if args.fused_rope else "0"  # rope_kernel reads it at each call
    if args.fused_elementwise:
        fused.ENABLED = True
    elif args.plain_elementwise:
        fused.ENABLED = False
    on = fused.enabled()
    if on is None:
        return "fla on CUDA" if fused._load() else "off (fla not installed)"
    return "off" if on is False else "fla on CUDA"


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
    """Run fn() once under longctx's StepProfiler: OUT/profile_<label>.txt (wall time against kernel
    time, top ops) and a trace beside it; returns the headline figures."""
    from longctx.train.profiling import StepProfiler

    prof = StepProfiler(1, 1, out_dir, device, label=f"profile_{label}")
    prof.before(1)
    fn()
    prof.after(1)
    return prof.result
