"""Fit one sample to its length: the most haystack such that prompt + generation <= max_seq_length.

A task's draft gives `estimate(n)` (cheap, from cached piece counts; nondecreasing in n) and
`build(n)` (the sample, with `counted`: its length summed from pieces). The search finds the
largest n whose length fits the budget, so a sample is at most one haystack unit shorter than
it could be. Lengths come from piece sums ("additive" mode) or, when a tokenizer breaks
additivity, from tokenizing the whole rendered prompt ("full" mode). Additive mode is checked
against a full tokenization on the first sample and every `verify_every`-th one; one mismatch
switches the (task, length) to full mode for good.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .errors import LengthTooShort
from .tokens import TokenCounter

log = logging.getLogger(__name__)


@dataclass
class Built:
    input: str
    gen_prefix: str
    outputs: list[str]
    counted: int  # length of the rendered prompt, summed from pieces
    extra: dict = field(default_factory=dict)


@dataclass
class Mode:
    full: bool = False  # tokenize every candidate prompt in full
    verify_every: int = 25
    switched: bool = False


def largest_fitting(estimate, lo: int, hi: int, budget: int) -> int:
    """Largest n in [lo, hi] with estimate(n) <= budget, or lo - 1 when none fits."""
    if estimate(lo) > budget:
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit(draft, counter: TokenCounter, budget: int, mode: Mode, index: int, what: str) -> tuple[Built, int, int]:
    """Returns the built sample, its exact prompt length (tokens, without generation) and its
    haystack size n."""
    if not mode.full:
        built, length, n = _search(draft, budget, lambda b: b.counted)
        if index % mode.verify_every == 0:
            exact = counter.count(counter.render(built.input, built.gen_prefix))
            if exact == length:
                return built, length, n
            log.warning(
                "%s: this tokenizer does not count prompts additively (%d summed vs %d exact); "
                "tokenizing every prompt in full instead (slower, same samples' rules)",
                what,
                length,
                exact,
            )
            mode.full = mode.switched = True
        else:
            return built, length, n
    return _search(draft, budget, lambda b: counter.count(counter.render(b.input, b.gen_prefix)))


def _search(draft, budget: int, measure) -> tuple[Built, int, int]:
    lo, hi = draft.n_bounds()
    n = largest_fitting(draft.estimate, lo, hi, budget)
    if n < lo:
        raise LengthTooShort(f"even {lo} haystack units exceed {budget} prompt tokens")
    best: tuple[int, Built, int] | None = None
    tried: dict[int, int] = {}
    for _ in range(12):
        built = draft.build(n)
        length = tried[n] = measure(built)
        delta = length - draft.estimate(n)
        if length <= budget:
            if best is None or n > best[0]:
                best = (n, built, length)
            nxt = largest_fitting(lambda m, d=delta: draft.estimate(m) + d, lo, hi, budget)
            if nxt <= n or nxt in tried:
                # one more unit would not fit (by the calibrated estimate) or was already too long
                break
        else:
            nxt = largest_fitting(lambda m, d=delta: draft.estimate(m) + d, lo, hi, budget)
            nxt = min(nxt, n - 1)
            if best is not None and nxt <= best[0]:
                break
            if nxt < lo:
                raise LengthTooShort(f"even {lo} haystack units exceed {budget} prompt tokens")
        n = nxt
    if best is None:
        # the estimate kept overshooting: walk down until the prompt fits
        for m in range(n, lo - 1, -1):
            built = draft.build(m)
            length = measure(built)
            if length <= budget:
                return built, length, m
        raise LengthTooShort(f"even {lo} haystack units exceed {budget} prompt tokens")
    return best[1], best[2], best[0]
