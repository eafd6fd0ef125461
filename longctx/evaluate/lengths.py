"""Context lengths as users write them (`4k`, `64K`, `1m`, `1024`) and as tables show them."""
from __future__ import annotations

import re

from longctx.errors import UsageError

_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}
_LENGTH = re.compile(r"^(\d+)([km]?)$")


def parse_length(text: str) -> int:
    """`4k` -> 4096 (binary k, as RULER's lengths are powers of two); `1000` -> 1000."""
    m = _LENGTH.match(text.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise UsageError(
            f"bad length {text!r}; use a positive token count like 1024, 4k, 64k or 1m"
        )
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_lengths(text: str) -> list[int]:
    """A comma-separated list, sorted, without repeats."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError(f"no lengths in {text!r}; give a comma-separated list like 4k,8k,16k")
    return sorted({parse_length(p) for p in parts})


def format_length(n: int) -> str:
    """4096 -> `4k`, 1048576 -> `1m`, 1000 -> `1000`."""
    for unit, size in (("m", 1024 * 1024), ("k", 1024)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)
