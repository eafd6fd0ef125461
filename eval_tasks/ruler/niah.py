"""Needle in a haystack (the 8 niah_* tasks), as NVIDIA/RULER's scripts/data/synthetic/niah.py.

Haystacks: `noise` (the repeated grass/sky sentence, one per line), `needle` (distractor
needles with random keys, one per line) and `essay` (words of the essays; needles go between
sentences at depths drawn from RULER's 40 depths). The haystack size n (sentences, distractors
or words) is what the sizer fits.
"""

from __future__ import annotations

import re

import numpy as np

from .rng import stream
from .sizing import Built
from .spec import DEPTHS, NEEDLE, NOISE, niah_strings
from .words import Permutation, random_value

_HYPHEN = re.compile(r"(?<=[^\W\d_])(?=-[^\W\d_])")


class NiahDraft:
    def __init__(self, job, index: int):
        s = job.spec
        self.job, self.index, c = job, index, job.counter
        self.kind = s["type_haystack"]
        rng = job.rng(index, "sample")
        num_k = max(s["num_needle_k"], s["num_needle_q"])
        type_k, type_v = s["type_needle_k"], s["type_needle_v"]
        self.keys: list[str] = []
        while len(self.keys) < num_k:  # distinct keys: a repeated key would make the question ambiguous
            key = random_value(type_k, rng)
            if key not in self.keys:
                self.keys.append(key)
        values = [[random_value(type_v, rng) for _ in range(s["num_needle_v"])] for _ in self.keys]
        needles = [
            NEEDLE.format(type_needle_v=type_v, key=k, value=v)
            for k, vs in zip(self.keys, values, strict=True)
            for v in vs
        ]
        rng.shuffle(needles)
        self.needles = needles
        asked = rng.sample(range(num_k), s["num_needle_q"])
        queries = [self.keys[i] for i in asked]
        self.answers = [a for i in asked for a in values[i]]
        query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
        template, prefix, singular = niah_strings(s["num_needle_q"], s["num_needle_v"])
        noun = type_v[:-1] if singular else type_v
        head, tail = template.split("{context}")
        self.head = head.format(type_needle_v=noun, query=query)
        self.tail = tail.format(type_needle_v=noun, query=query)
        self.gen_prefix = prefix.format(type_needle_v=noun, query=query)
        self.depths = rng.sample(DEPTHS, len(needles))
        self.type_k, self.type_v = type_k, type_v

        self.tail_r = c.render_tail(self.tail, self.gen_prefix)
        head_r = c.render_head(self.head, self.gen_prefix)
        self.c_head = c.count_head(head_r)
        if self.kind == "essay":
            self.hay = job.haystack()
            self.tokens = essay_tokens(c, self.hay)
            self.c_needles = sum(c.count_many([" " + nd for nd in needles]))
        else:
            self.c_needles = sum(c.count_many([nd + "\n" for nd in needles]))
            # the context always ends with a haystack line (RULER inserts needles before index n)
            self.c_tail_after_nl = c.count_plain(self.tail_r[1:])
            if self.kind == "noise":
                self.c_unit = c.count_plain(NOISE + "\n")
            else:
                self.distractors = Distractors(job, index, type_k, type_v, set(self.keys))

    # ---- sizing interface
    def n_bounds(self) -> tuple[int, int]:
        lo = len(self.needles)
        if self.kind == "essay":
            per_word = self.tokens.tokens_per_word()
            return 1, int(self.job.budget / per_word * 1.5) + 64
        if self.kind == "noise":
            return lo, int(self.job.budget / max(1, self.c_unit) * 1.5) + 64
        per_unit = self.distractors.mean_tokens()
        return lo, min(self.distractors.max_lines(), int(self.job.budget / max(1.0, per_unit) * 1.5) + 64)

    def estimate(self, n: int) -> int:
        if self.kind == "noise":
            return self.c_head + n * self.c_unit + self.c_needles + self.c_tail_after_nl
        if self.kind == "needle":
            return self.c_head + self.distractors.cum(n) + self.c_needles + self.c_tail_after_nl
        return self._essay(n, materialize=False)[1]

    def build(self, n: int) -> Built:
        if self.kind == "essay":
            context, counted = self._essay(n, materialize=True)
        else:
            lines = [NOISE] * n if self.kind == "noise" else self.distractors.lines(n)
            # RULER: sorted(random.sample(range(n), k), reverse=True), each needle inserted in turn
            positions = sorted(
                self.job.rng(self.index, "positions", n).sample(range(n), len(self.needles)), reverse=True
            )
            for pos, needle in zip(positions, self.needles, strict=True):
                lines.insert(pos, needle)
            context = "\n".join(lines)
            counted = self.estimate(n)
        return Built(self.head + context + self.tail, self.gen_prefix, self.answers, counted)

    # ---- essay haystack
    def _essay(self, n: int, materialize: bool):
        hay, tok, c = self.hay, self.tokens, self.job.counter
        starts = hay.sentence_starts_upto(n)
        nsent = len(starts)
        # RULER: [0] + sorted(int(len(sents) * depth / 100)) + [len(sents)], as sentence indices
        sent_idx = sorted(int(nsent * (d / 100)) for d in self.depths)
        word_pos = [int(starts[i]) if i < nsent else n for i in sent_idx]
        bounds = [0, *word_pos, n]
        count = self.c_head + self.c_needles
        parts = []
        last = len(bounds) - 2
        for i in range(len(bounds) - 1):
            a, b = bounds[i], bounds[i + 1]
            if materialize:
                parts.append(hay.text(a, b))
                if i < len(self.needles):
                    parts.append(self.needles[i])
            if i == 0:
                count += tok.span(0, b)  # the context starts with word 0, right after the head
            elif i < last:
                count += tok.spaced_span(a, b) if a < b else c.count_plain(" ")
            else:
                # the last chunk meets the question; count its final words with it exactly
                k = max(a, b - 8)
                if k > a:
                    count += tok.spaced_span(a, k)
                count += c.count_plain(" " + hay.text(k, b) + self.tail_r)
        return (" ".join(parts) if materialize else None), count


class EssayTokens:
    """Token counts of the repeated essay's word prefixes, from one tokenization per tokenizer."""

    def __init__(self, counter, hay):
        self.counter, self.hay = counter, hay
        self.cum = np.zeros(1, dtype=np.int64)

    def ensure(self, n: int) -> None:
        if n < len(self.cum):
            return
        size = max(n + 1, 2 * len(self.cum), 2048)
        text = self.hay.text(0, size)
        lens = np.fromiter((len(self.hay.word(j)) + 1 for j in range(size)), dtype=np.int64, count=size)
        cuts = np.concatenate([[0], np.cumsum(lens)[:-1] - 1, [len(text)]])  # the space before each word
        self.cum = self.counter.prefix_counts(text, cuts)

    def span(self, a: int, b: int) -> int:
        """Tokens of words a..b-1 as they follow the previous word (with its space), or from the start when a == 0."""
        self.ensure(b)
        return int(self.cum[b] - self.cum[a])

    def spaced_span(self, a: int, b: int) -> int:
        """Tokens of " " + words a..b-1."""
        if a > 0:
            return self.span(a, b)
        w0 = self.hay.word(0)
        return self.counter.count_plain(" " + w0) + self.span(1, b)

    def tokens_per_word(self) -> float:
        self.ensure(2048)
        return max(0.5, float(self.cum[2048]) / 2048)


def essay_tokens(counter, hay) -> EssayTokens:
    key = ("essay", hay.source, hay.digest)
    if key not in counter.memo:
        counter.memo[key] = EssayTokens(counter, hay)
    return counter.memo[key]


class DistractorPool:
    """Random needles (key, value) for the `needle` haystack, drawn once per (task, seed) and
    counted once per tokenizer. A sample's distractors are a random draw without replacement
    from the pool's first `size` entries (size from the length), so two samples share about a
    sixth of their distractor lines while each sample's own needles stay fresh; counting every
    distractor of every sample afresh would cost as much as tokenizing the whole prompt."""

    def __init__(self, job, type_k, type_v):
        self.rng = stream(job.seed, job.task, "distractor-pool")
        self.counter, self.type_k, self.type_v = job.counter, type_k, type_v
        self.keys: list[str] = []
        self.values: list[str] = []
        self.tokens = np.zeros(0, dtype=np.int64)  # tokens of each line with its "\n"
        c = self.counter
        self.c_const = c.count_plain(f"One of the special magic {type_v} for") + c.count_plain(" is:")

    @staticmethod
    def size_for(budget: int) -> int:
        # a line costs >= ~20 tokens, so a sample uses at most ~1/5 of the pool (mostly ~1/6)
        return max(1024, budget // 4)

    def ensure(self, size: int) -> None:
        have = len(self.keys)
        if size <= have:
            return
        # an entry's key and value drawn together: the pool is one sequence, the same however it grows
        # (8k alone, or after 4k in a sweep)
        pairs = [(random_value(self.type_k, self.rng), random_value(self.type_v, self.rng)) for _ in range(size - have)]
        new_k = [k for k, _ in pairs]
        new_v = [v for _, v in pairs]
        if self.type_k == "words":
            # " adj-noun": byte-level/regex pre-tokenizers cut before a "-" between two letters, so
            # the parts (which repeat across keys and stay cached) add up; the sizer's
            # full-tokenization check catches a tokenizer where they do not
            segs = [_HYPHEN.split(" " + k) for k in new_k]
            counts = iter(self.counter.count_many([x for seg in segs for x in seg]))
            ck = [sum(next(counts) for _ in seg) for seg in segs]
        else:
            ck = self.counter.count_many([" " + k for k in new_k])
        cv = self.counter.count_many([" " + v + ".\n" for v in new_v])
        per = self.c_const + np.asarray(ck, dtype=np.int64) + np.asarray(cv, dtype=np.int64)
        self.keys += new_k
        self.values += new_v
        self.tokens = np.concatenate([self.tokens, per])


class Distractors:
    """The `needle` haystack of one sample: distractor needles in a random order that does not
    change with n, so the first n are the same whatever n the sizer tries."""

    def __init__(self, job, index, type_k, type_v, real_keys):
        key = ("distractor-pool", job.task, job.seed, type_k, type_v)
        if key not in job.counter.memo:
            job.counter.memo[key] = DistractorPool(job, type_k, type_v)
        self.pool = job.counter.memo[key]
        self.size = DistractorPool.size_for(job.budget)
        self.pool.ensure(self.size)
        self.order = Permutation(self.size, *job.stream(index, "distractors"))
        self.real_keys, self.type_v = real_keys, type_v
        self.idx: list[int] = []
        self._taken = 0
        self.csum = np.zeros(1, dtype=np.int64)

    def _grow(self, n: int) -> None:
        while n >= len(self.csum):
            taken = self._taken
            if taken >= self.size:
                raise ValueError(f"the distractor pool ({self.size} lines) is too small for {n} lines")
            drawn = self.order.take(max(n + 1, taken + taken // 8) + 8)  # a few spare: real keys are skipped
            self._taken = len(drawn)
            fresh = [i for i in drawn[taken:] if self.pool.keys[i] not in self.real_keys]
            self.idx += fresh
            self.csum = np.concatenate([self.csum, self.csum[-1] + np.cumsum(self.pool.tokens[fresh])])

    def cum(self, n: int) -> int:
        """Tokens of the first n lines, each with its newline."""
        self._grow(n)
        return int(self.csum[n])

    def mean_tokens(self) -> float:
        return float(self.pool.tokens[: self.size].mean())

    def max_lines(self) -> int:
        return self.size - len(self.real_keys) - 1

    def lines(self, n: int) -> list[str]:
        self._grow(n)
        p = self.pool
        return [NEEDLE.format(type_needle_v=self.type_v, key=p.keys[i], value=p.values[i]) for i in self.idx[:n]]
