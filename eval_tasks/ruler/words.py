"""Word sources: wonderwords lists (RULER's keys and CWE words) and the bundled English list
that stands in for RULER's `english_words.json` when CWE needs more words than wonderwords has."""

from __future__ import annotations

import functools
import gzip
import uuid
from pathlib import Path

from .rng import permutation

ENGLISH_WORDS = Path(__file__).parent / "data" / "english_words.txt.gz"


@functools.cache
def wonderwords_lists() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(nouns, adjectives, verbs), each sorted and deduplicated."""
    import wonderwords

    reader = getattr(wonderwords.random_word, "_get_words_from_text_file", None)
    if reader is not None:
        lists = [reader(f) for f in ("nounlist.txt", "adjectivelist.txt", "verblist.txt")]
    else:  # older/newer wonderwords: same files behind the categories
        cats = wonderwords.RandomWord()._categories
        lists = [cats["nouns"], cats["adjectives"], cats["verbs"]]
    return tuple(tuple(sorted(set(x))) for x in lists)


@functools.cache
def cwe_words() -> tuple[str, ...]:
    """RULER's CWE vocabulary: sorted set of wonderwords nouns + adjectives + verbs."""
    nouns, adjs, verbs = wonderwords_lists()
    return tuple(sorted(set(nouns + adjs + verbs)))


@functools.cache
def english_words() -> tuple[str, ...]:
    with gzip.open(ENGLISH_WORDS, "rt", encoding="utf-8") as f:
        return tuple(w for w in f.read().split("\n") if w)


def random_value(kind: str, rng) -> str:
    """RULER's needle keys/values: 7-digit numbers, adjective-noun words, uuid4 strings."""
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        nouns, adjs, _ = wonderwords_lists()
        # uniform over the adjective x noun pairs RULER enumerates, without building the 6M list
        return f"{rng.choice(adjs)}-{rng.choice(nouns)}"
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"needle type {kind!r}; accepted: numbers, words, uuids")


class Permutation:
    """A random order of range(n), drawn once (rng.permutation); a prefix never changes when
    more items are asked for."""

    def __init__(self, n: int, *parts: object):
        self.n, self.parts, self._order = n, parts, None

    def take(self, k: int) -> list[int]:
        if self._order is None:
            self._order = permutation(self.n, *self.parts).tolist()
        return self._order[: min(k, self.n)]
