"""longctx: long-context extension and RULER evaluation for hybrid language models."""

__version__ = "0.1.0"
