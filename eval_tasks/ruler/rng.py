"""Per-sample random streams that depend only on (seed, task, length, index, stream name).

Never Python's `hash()` (randomised per process) nor global random state, so a sample is the
same on any machine whatever else was generated before it.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np


def derive_seed(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def stream(*parts: object) -> random.Random:
    return random.Random(derive_seed(*parts))


def permutation(n: int, *parts: object) -> np.ndarray:
    """A random permutation of range(n) for the stream `parts`, fast for large n.

    Sorts the raw output of NumPy's PCG64 bit generator, whose stream NumPy keeps fixed across
    versions (unlike its shuffling methods, or Python's beyond random())."""
    raw = np.random.PCG64(derive_seed(*parts)).random_raw(n)
    return np.argsort(raw, kind="stable")


def shuffled(items: list, *parts: object) -> list:
    return [items[i] for i in permutation(len(items), *parts)]
