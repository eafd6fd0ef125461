"""The LONGCTX_* environment switches, read and checked in one place (no torch import).

`check()` runs before every CLI command, so a bad value is one line and exit 2 before anything is
written, not a silent fallback or a traceback at the first forward. Values are case-insensitive;
unset or empty means the default.
"""

from __future__ import annotations

import os

from longctx.errors import UsageError

ATTN_BACKENDS = ("flash", "sdpa", "sdpa_docs", "flex", "fla", "varlen", "math")
GDN_BACKENDS = ("fla", "torch")
_ON, _OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")

# name -> (values named in errors, other accepted spellings, what the switch does)
SWITCHES = {
    "LONGCTX_FUSED_ELEMENTWISE": (
        ("1", "0", "auto"),
        _ON[1:] + _OFF[1:],
        "fla's fused RMSNorm/SwiGLU: 1 required, 0 off, auto on CUDA with fla",
    ),
    "LONGCTX_FUSED_ROPE": (
        ("1", "0", "auto"),
        _ON[1:] + _OFF[1:],
        "RoPE on q/k in one Triton kernel (longctx.model.rope_kernel): 1 / auto on CUDA with Triton, 0 off",
    ),
    "LONGCTX_DATA_PREFETCH": (("process", "thread", "off"), (), "where GPU training makes its batches ahead"),
    "LONGCTX_VARLEN_ATTENTION": (
        ("1", "0", "auto"),
        _ON[1:] + _OFF[1:],
        "packed and sliding-window attention on CUDA through torch's varlen flash-attention: 1 everywhere, 0 never, "
        "auto for training's packed documents (no flex compile)",
    ),
    "LONGCTX_ATTN_BACKEND": (ATTN_BACKENDS, (), "force one attention kernel"),
    "LONGCTX_GDN_BACKEND": (GDN_BACKENDS, (), "force one Gated DeltaNet path"),
    "LONGCTX_CP_GDN": (GDN_BACKENDS, (), "the Gated DeltaNet path under context parallelism"),
}


def peek(name: str) -> str | None:
    """The switch's value (lower case), None when unset or empty, unchecked: for module-level defaults
    read at import, where an error would be a traceback (the CLI's check() reports a bad value)."""
    return os.environ.get(name, "").strip().lower() or None


def get(name: str) -> str | None:
    """The switch's value (lower case), None when unset or empty; a UsageError naming a bad value."""
    raw = os.environ.get(name, "")
    value = peek(name)
    if value is None:
        return None
    named, aliases, what = SWITCHES[name]
    if value not in named + aliases:
        raise UsageError(f"{name}={raw!r}: expected one of {', '.join(named)} ({what})")
    return value


def three_way(name: str) -> bool | None:
    """A 1 / 0 / auto switch: True, False, or None (unset or auto); a UsageError naming a bad value."""
    value = get(name)
    return None if value in (None, "auto") else value in _ON


def switch(name: str, override: bool | None = None) -> bool | None:
    """override where code set one (a module's ENABLED), else three_way(name) as it is now; a bad value reads as
    auto here (the CLI's check() reports it before any model is built)."""
    if override is not None:
        return override
    try:
        return three_way(name)
    except UsageError:
        return None


def varlen_attention() -> bool | None:
    """LONGCTX_VARLEN_ATTENTION: True (1: wherever packed documents or a sliding window are), False (0: never) or
    None (auto, unset: training's packed documents; attention.select_backend)."""
    return switch("LONGCTX_VARLEN_ATTENTION")


def fused_elementwise() -> bool | None:
    """LONGCTX_FUSED_ELEMENTWISE as longctx.model.fused.ENABLED: True, False or None (auto)."""
    return three_way("LONGCTX_FUSED_ELEMENTWISE")


# LONGCTX_KERNEL_CACHE=DIR: one directory for the compiled-kernel caches of every library the GPU path
# compiles with, so that a job on a fresh machine (a scheduler's node, a new container) starts from the
# kernels an earlier job built instead of compiling for minutes. Each is set only where unset.
KERNEL_CACHES = {
    "TRITON_CACHE_DIR": "triton",  # Triton's JIT binaries and fla's autotune results (FLA_CACHE_RESULTS)
    "TORCHINDUCTOR_CACHE_DIR": "inductor",  # torch.compile / FlexAttention's compiled graphs
    "TILELANG_CACHE_DIR": "tilelang",  # tilelang kernels (fla's GDN backward)
}


def kernel_cache() -> dict[str, str]:
    """The cache variables LONGCTX_KERNEL_CACHE sets (the directory and its parts made), {} when unset;
    a UsageError naming the value when the directory cannot be made."""
    raw = os.environ.get("LONGCTX_KERNEL_CACHE", "").strip()
    if not raw:
        return {}
    root = os.path.abspath(os.path.expanduser(raw))
    paths = {var: os.environ.get(var) or os.path.join(root, sub) for var, sub in KERNEL_CACHES.items()}
    try:
        for path in paths.values():
            os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"LONGCTX_KERNEL_CACHE={raw!r}: cannot make the kernel cache directory ({e.strerror})"
        ) from None
    return paths


def check() -> None:
    """Every switch checked; LONGCTX_KERNEL_CACHE applied to this process and the ones it starts."""
    for name in SWITCHES:
        get(name)
    os.environ.update(kernel_cache())
