"""Re-exports longctx.lengths for scripts that import the length parser from here."""

from longctx.lengths import format_length, parse_length, parse_lengths  # noqa: F401
