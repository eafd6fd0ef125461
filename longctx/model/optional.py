"""Optional kernel packages (fla, flash-attn), imported on first use.

`load("pkg.module:name", ...)` returns the named objects as a tuple, or False when a package is
missing (the caller then takes its PyTorch path); the answer is cached per request. `why_missing`
gives the import error behind a False (a package absent, or present but failing to import, e.g. fla's
Hopper backward without tilelang).
"""

from __future__ import annotations

import functools
import importlib
import sys

_errors: dict[tuple[str, ...], str] = {}
_warned: set[str] = set()


@functools.cache
def load(*specs: str):
    found = []
    for spec in specs:
        module, name = spec.split(":")
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError as e:
            _errors[specs] = f"{type(e).__name__}: {e}"
            return False
    return tuple(found)


def why_missing(*specs: str) -> str | None:
    """The import error that made load(*specs) False, or None when it loads."""
    return None if load(*specs) else _errors.get(specs)


def warn_once(key: str, message: str) -> None:
    """One line on stderr, once per process and key: a fast path that silently is not taken."""
    if key not in _warned:
        _warned.add(key)
        print(f"longctx: warning: {message}", file=sys.stderr)
