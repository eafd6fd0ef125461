"""Optional kernel packages (fla, flash-attn), imported on first use.

`load("pkg.module:name", ...)` returns the named objects as a tuple, or False when a package is
missing (the caller then takes its PyTorch path); the answer is cached per request.
"""

from __future__ import annotations

import functools
import importlib


@functools.cache
def load(*specs: str):
    found = []
    for spec in specs:
        module, name = spec.split(":")
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError:
            return False
    return tuple(found)
