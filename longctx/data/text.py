"""Natural-text material for the embedded corpus: the shipped public-domain book, prose
generated from it, repetitive noise, and word lists for keys/values.

Everything is a pure function of a `random.Random`, so documents are reproducible from a seed.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from importlib import resources

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'_(])")

# Our own repetitive filler (RULER's noise haystack uses different sentences); a document
# cycles through a few of these, which gives the model a haystack with nothing to learn in it.
NOISE_SENTENCES = (
    "The river runs past the old mill.",
    "Snow settles quietly on the roof.",
    "A dog barks somewhere far away.",
    "The kettle hums on the stove.",
    "Morning comes slowly over the fields.",
    "Nobody is in a hurry today.",
    "The clock in the hall keeps ticking.",
    "Leaves drift across the empty yard.",
    "The boats rock gently in the harbor.",
    "A cart rolls down the long road.",
    "Rain taps against the window.",
    "The bread is cooling on the table.",
    "Smoke rises from the chimney.",
    "The path winds up the hill and back.",
)


@lru_cache(maxsize=1)
def book() -> str:
    """The Devil's Dictionary (public domain; see corpus/README.md)."""
    return (resources.files("longctx.data") / "corpus" / "devils_dictionary.txt").read_text("ascii")


@lru_cache(maxsize=1)
def paragraphs() -> tuple[str, ...]:
    """The book as unwrapped paragraphs (line breaks inside a paragraph become spaces)."""
    out = []
    for block in re.split(r"\n\s*\n", book()):
        text = " ".join(line.strip() for line in block.splitlines() if line.strip())
        text = re.sub(r"\s+", " ", text)
        if len(text) >= 20:
            out.append(text)
    return tuple(out)


@lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    return tuple(s for p in paragraphs() for s in _SENTENCE_END.split(p) if s)


def excerpt(rng: random.Random, n_chars: int) -> str:
    """A contiguous passage of the book of about n_chars, starting at a paragraph (wraps around)."""
    paras = paragraphs()
    i = rng.randrange(len(paras))
    out, size = [], 0
    while size < n_chars:
        p = paras[i % len(paras)]
        if size + len(p) > n_chars:  # end inside the paragraph, at the first sentence end past n_chars
            kept, part = [], 0
            for sent in _SENTENCE_END.split(p):
                kept.append(sent)
                part += len(sent) + 1
                if size + part >= n_chars:
                    break
            p = " ".join(kept)
        out.append(p)
        size += len(p) + 2
        i += 1
    return "\n\n".join(out)


@lru_cache(maxsize=1)
def _markov() -> tuple[dict, list]:
    """Order-2 word chain over the book; sentence starts are the states after a sentence end."""
    chain: dict[tuple[str, str], list[str]] = {}
    starts = []
    for p in paragraphs():
        words = p.split(" ")
        for a, b, c in zip(words, words[1:], words[2:], strict=False):
            chain.setdefault((a, b), []).append(c)
            if a.endswith((".", "!", "?")) and b[:1].isupper():
                starts.append((b, c))
    return chain, starts


def markov_prose(rng: random.Random, n_chars: int) -> str:
    """Plausible-looking English prose of about n_chars (statistics of the book, not its text)."""
    chain, starts = _markov()
    paras, words, size, in_para = [], [], 0, 0
    state = rng.choice(starts)
    words.extend(state)
    while True:
        nxt = chain.get(state)
        if not nxt:
            state = rng.choice(starts)
            words.extend(state)
            continue
        w = rng.choice(nxt)
        words.append(w)
        size += len(w) + 1
        state = (state[1], w)
        if w.endswith((".", "!", "?")):
            in_para += 1
            if size >= n_chars or in_para >= rng.randint(3, 8):
                paras.append(" ".join(words))
                words, in_para = [], 0
                if size >= n_chars:
                    return "\n\n".join(paras)
                state = rng.choice(starts)
                words.extend(state)


# Short sentences of the shape RULER's noise haystack is made of ("The <thing> is <colour>." and a
# few stock phrases), generated from our own words (RULER's own sentences never appear). Opt-in
# (`short` below, data.short_noise in a run config): a model that has only seen the long noise
# sentences above can read a repeated "... is <word>." around a needle as the answer's pattern.
COPULAS = (
    "The {noun} is {adjective}.",
    "Every {noun} is {adjective}.",
    "The {noun} looks {adjective}.",
    "A {noun} is {adjective}.",
)
STOCK_PHRASES = (
    "On we go.",
    "Round and round again.",
    "Back to the start.",
    "So it goes.",
    "Up and down once more.",
    "Off and away.",
)


def noise_cycle(rng: random.Random, short: float = 0.0) -> list[str]:
    """The few sentences one noise haystack repeats: from NOISE_SENTENCES, or (a `short` share of
    the time) generated short ones. short=0 draws exactly what it always drew."""
    if not (short and rng.random() < short):
        return rng.sample(NOISE_SENTENCES, rng.randint(3, 6))
    w = words()
    cycle = [
        rng.choice(COPULAS).format(noun=rng.choice(w["noun"]), adjective=rng.choice(w["adjective"]))
        for _ in range(rng.randint(2, 4))
    ]
    return cycle + rng.sample(STOCK_PHRASES, rng.randint(0, 2))


def noise(rng: random.Random, n_chars: int, short: float = 0.0) -> str:
    """A few short sentences repeated in a cycle up to about n_chars."""
    cycle = noise_cycle(rng, short)
    out, size, i = [], 0, 0
    while size < n_chars:
        s = cycle[i % len(cycle)]
        out.append(s)
        size += len(s) + 1
        i += 1
    return " ".join(out)


def noise_lines(rng: random.Random, n_chars: int, short: float = 0.0) -> list[str]:
    """Noise laid out as RULER lays out its noise haystack: the whole cycle on one line, the line
    repeated up to about n_chars (a needle then goes on a line of its own)."""
    line = " ".join(noise_cycle(rng, short))
    return [line] * max(1, round(n_chars / (len(line) + 1)))


def filler_sentences(rng: random.Random, kind: str, n_chars: int, short_noise: float = 0.0) -> list[str]:
    """Filler split into sentences, so facts can be inserted between them (`short_noise`: see noise_cycle)."""
    if kind == "book":
        text = " ".join(excerpt(rng, n_chars).split("\n\n"))
    elif kind == "prose":
        text = " ".join(markov_prose(rng, n_chars).split("\n\n"))
    elif kind == "noise":
        return _SENTENCE_END.split(noise(rng, n_chars, short_noise))
    else:
        raise ValueError(f"filler kind {kind!r}; accepted: book, prose, noise")
    out, size = [], 0
    for s in _SENTENCE_END.split(text):
        if size >= n_chars:
            break
        out.append(s)
        size += len(s) + 1
    return out


def _wordlist(name: str) -> tuple[str, ...]:
    text = (resources.files("wonderwords") / "assets" / name).read_text("utf-8")
    return tuple(w for w in text.split() if w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 10)


@lru_cache(maxsize=1)
def words() -> dict[str, tuple[str, ...]]:
    """Common English nouns/adjectives/verbs (wonderwords' lists, profanity removed)."""
    bad = set(_wordlist("profanitylist.txt"))
    return {
        kind: tuple(w for w in _wordlist(f"{kind}list.txt") if w not in bad) for kind in ("noun", "adjective", "verb")
    }
