"""The LONGCTX_* environment switches, read and checked in one place (no torch import).

`check()` runs before every CLI command, so a bad value is one line and exit 2 before anything is
written, not a silent fallback or a traceback at the first forward. Values are case-insensitive;
unset or empty means the default.
"""

from __future__ import annotations

import os

from longctx.errors import UsageError

ATTN_BACKENDS = ("flash", "sdpa", "sdpa_docs", "flex", "fla", "math")
GDN_BACKENDS = ("fla", "torch")
_ON, _OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")

# name -> (values named in errors, other accepted spellings, what the switch does)
SWITCHES = {
    "LONGCTX_FUSED_ELEMENTWISE": (
        ("1", "0", "auto"),
        _ON[1:] + _OFF[1:],
        "fla's fused RMSNorm/SwiGLU: 1 required, 0 off, auto on CUDA with fla",
    ),
    "LONGCTX_DATA_PREFETCH": (("process", "thread", "off"), (), "where GPU training makes its batches ahead"),
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


def fused_elementwise() -> bool | None:
    """LONGCTX_FUSED_ELEMENTWISE as longctx.model.fused.ENABLED: True, False or None (auto)."""
    value = get("LONGCTX_FUSED_ELEMENTWISE")
    return None if value in (None, "auto") else value in _ON


def check() -> None:
    for name in SWITCHES:
        get(name)
