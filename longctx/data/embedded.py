"""The offline default corpus: an endless, seeded stream of prose and synthetic long-range tasks.

Document i is a pure function of (seed, i), so any number of tokens is available, a run is
reproducible, and resuming at document i needs no replay. Document sizes are drawn log-uniformly
from a range, so the same generator serves short documents for base training and long ones for
context extension.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator

from longctx.data import ruler_shaped, synthetic, text
from longctx.data.docsource import DocSource
from longctx.errors import UsageError

# Retrieval-heavy on purpose: the corpus exists to teach small models long-range recall.
DEFAULT_MIX = {"book": 0.15, "prose": 0.15, "kv": 0.45, "chain": 0.1, "common": 0.075, "freq": 0.075}
# "drill" (dense multi-question recall, synthetic.recall_drill) is off by default; a run's
# data.mix turns it on (the study's retrieval curriculum starts with it). So is "magic"
# (needles in RULER's own wording, longctx.data.ruler_shaped): a run that uses it says so.
KINDS = tuple(DEFAULT_MIX) + ("drill", ruler_shaped.KIND)


def valid_mix(mix) -> bool:
    """A mapping of known kinds to non-negative numbers, not all zero."""
    return (
        isinstance(mix, dict)
        and bool(mix)
        and all(k in KINDS for k in mix)
        and all(isinstance(w, (int, float)) and w >= 0 for w in mix.values())
        and sum(mix.values()) > 0
    )


def valid_range(r) -> bool:
    """Two integers 1 <= min <= max (a document size range)."""
    return len(r) == 2 and all(isinstance(x, int) for x in r) and 1 <= r[0] <= r[1]


class EmbeddedSource(DocSource):
    infinite = True

    def __init__(
        self,
        seed: int = 0,
        *,
        doc_chars: tuple[int, int] = (2000, 16000),
        mix: dict[str, float] | None = None,
        chat_fraction: float = 0.2,
        scale: dict[str, float] | None = None,
        fillers=synthetic.HAYSTACKS,
        layout: synthetic.Layout = synthetic.PROSE,
    ):
        """`scale[kind]` multiplies the drawn length for that kind (embedded_source() sets it to the
        kind's characters per token, so that `doc_chars` then counts tokens); `layout`: how the
        needle documents lay out their haystacks (synthetic.Layout; the default leaves them as prose)."""
        if not valid_range(doc_chars):
            raise UsageError(f"embedded doc length range {doc_chars!r}: need integers 1 <= min <= max")
        lo, hi = doc_chars
        mix = dict(DEFAULT_MIX if mix is None else mix)
        if not valid_mix(mix):
            raise UsageError(f"embedded mix {mix!r}: accepted kinds {', '.join(KINDS)} with non-negative weights")
        fillers = tuple(fillers)
        if not fillers or any(f not in synthetic.HAYSTACKS for f in fillers):
            raise UsageError(f"embedded fillers {list(fillers)!r}: give some of {', '.join(synthetic.HAYSTACKS)}")
        if not 0.0 <= chat_fraction <= 1.0:
            raise UsageError(f"embedded chat_fraction {chat_fraction!r}: accepted 0..1")
        self.seed, self.doc_chars, self.mix, self.chat_fraction = seed, (lo, hi), mix, chat_fraction
        self.scale = dict(scale or {})
        self.fillers = fillers  # haystack kinds the needle tasks may hide their facts in
        self.layout = layout
        self.name = "embedded"

    def _plan(self, i: int) -> tuple[random.Random, str, int]:
        # A string seed is hashed with SHA-512 by `random`, so it is stable across processes. The
        # length range is part of it: a run's later stage (longer documents, same seed) must not
        # meet the same keys and values again, or recall could come from memory instead of context.
        lo, hi = self.doc_chars
        rng = random.Random(f"longctx-embedded:{self.seed}:{lo}:{hi}:{i}")
        n = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        kind = rng.choices(list(self.mix), list(self.mix.values()))[0]
        return rng, kind, max(1, int(round(n * self.scale.get(kind, 1.0))))

    def kind(self, i: int) -> str:
        """Which kind document i is (one of KINDS)."""
        return self._plan(i)[1]

    def document(self, i: int) -> str:
        rng, kind, n_chars = self._plan(i)
        if kind == "book":
            return text.excerpt(rng, n_chars)
        if kind == "prose":
            return text.markov_prose(rng, n_chars)
        if kind == ruler_shaped.KIND:
            doc = ruler_shaped.magic_needles(rng, n_chars, self.fillers, self.layout)
            return ruler_shaped.render(doc, chat=rng.random() < self.chat_fraction)
        extra = {"fillers": self.fillers, "layout": self.layout} if kind in synthetic.FILLED else {}
        parts = synthetic.TASKS[kind](rng, n_chars, **extra)
        return synthetic.render(rng, parts, chat=rng.random() < self.chat_fraction)

    def iter_epoch(
        self, epoch: int, seed: int, start: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[int, str]]:
        # Already random per document; the stream is infinite, so there is only epoch 0.
        first = start + (rank - start) % world_size
        return ((i, self.document(i)) for i in itertools.count(first, world_size))


def chars_per_token(tokenizer, sample_chars: int = 4000, n: int = 8) -> dict[str, float]:
    """Measured characters per token of each kind of embedded document under `tokenizer`."""
    out = {}
    for kind in KINDS:
        src = EmbeddedSource(seed=12345, doc_chars=(sample_chars, sample_chars), mix={kind: 1.0})
        docs = [src.document(i) for i in range(n)]
        n_tok = sum(len(ids) for ids in tokenizer(docs, add_special_tokens=False)["input_ids"])
        out[kind] = sum(map(len, docs)) / n_tok
    return out


def embedded_source(
    seed: int = 0,
    *,
    doc_tokens: tuple[int, int] | None = None,
    doc_chars: tuple[int, int] | None = None,
    tokenizer=None,
    mix: dict[str, float] | None = None,
    chat_fraction: float = 0.2,
    fillers=synthetic.HAYSTACKS,
    layout=synthetic.PROSE,
) -> EmbeddedSource:
    """The default corpus. Size documents by characters, or by tokens (converted with the measured
    characters-per-token of `tokenizer`, the default tokenizer when None; sizes are then approximate)."""
    if doc_tokens is not None and doc_chars is not None:
        raise UsageError("embedded source: give doc_tokens or doc_chars, not both")
    if doc_tokens is not None:
        if not valid_range(doc_tokens):
            raise UsageError(f"embedded doc_tokens {doc_tokens!r}: need integers 1 <= min <= max")
        lo, hi = doc_tokens
        if tokenizer is None:
            from longctx.data.tokenizer import default_tokenizer

            tokenizer = default_tokenizer()
        return EmbeddedSource(
            seed,
            doc_chars=(lo, hi),
            mix=mix,
            chat_fraction=chat_fraction,
            scale=chars_per_token(tokenizer),
            fillers=fillers,
            layout=layout,
        )
    return EmbeddedSource(
        seed, doc_chars=doc_chars or (2000, 16000), mix=mix, chat_fraction=chat_fraction, fillers=fillers, layout=layout
    )
