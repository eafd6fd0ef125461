"""Context lengths as users write them (`4k`, `64K`, `1m`, `65536`, lists `4k,8k`) and as tables show them.
The one parser behind every length flag: `longctx eval --lengths`, `longctx extend --target/--base-len`
and the benchmark scripts' `--lengths`."""

from __future__ import annotations

import re

from longctx.errors import UsageError

_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}
_LENGTH = re.compile(r"^(\d+)([km]?)$")


def parse_length(text: str | int, flag: str = "length") -> int:
    """`4k` -> 4096 (binary k, as RULER's lengths are powers of two); `1000` or 1000 -> 1000."""
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    m = _LENGTH.match(str(text).strip().lower())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"{flag} {text!r}: give a positive token count like 1024, 4k, 64k or 1m")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_lengths(text: str, flag: str = "lengths") -> list[int]:
    """A comma-separated list, sorted, without repeats."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError(f"no lengths in {flag} {text!r}; give a comma-separated list like 4k,8k,16k")
    return sorted({parse_length(p, flag) for p in parts})


def format_length(n: int) -> str:
    """4096 -> `4k`, 1048576 -> `1m`, 1000 -> `1000`."""
    for unit, size in (("m", 1024 * 1024), ("k", 1024)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)
