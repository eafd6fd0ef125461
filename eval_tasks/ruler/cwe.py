"""Common words extraction (ruler_cwe), as NVIDIA/RULER's common_words_extraction.py.

A numbered list where 10 words appear freq_cw times and the rest freq_ucw times; below 4096
tokens RULER uses 6 and 1 instead, and a smaller one-shot example (20 words, repeats 3/1 instead
of 40 words, 10/3). The one-shot example (the full prompt with its answer) comes first. Words
come from wonderwords (nouns, adjectives, verbs); past its 8k words RULER switches to a large
English list, for which the bundled public-domain web2 list stands in.
"""

from __future__ import annotations

import numpy as np

from .rng import shuffled
from .sizing import Built
from .spec import TEMPLATES
from .tokens import indexed_counts
from .words import Permutation, cwe_words, english_words

T = TEMPLATES["common_words_extraction"]
HEAD, TAIL = T["template"].split("{context}")


def numbered(words) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


def _example_list(
    words: list[str], num_cw: int, common_repeats: int, uncommon_repeats: int, *stream
) -> tuple[list[str], list[str]]:
    common, uncommon = words[:num_cw], words[num_cw:]
    return shuffled(common * common_repeats + uncommon * uncommon_repeats, *stream), common


class CweDraft:
    def __init__(self, job, index: int):
        s, c = job.spec, job.counter
        self.job, self.index = job, index
        self.num_cw = s["num_cw"]
        small = job.max_seq_length < 4096
        ex_words, ex_cr, ex_ucr = (20, 3, 1) if small else (40, 10, 3)
        self.cr, self.ucr = (6, 1) if small else (s["freq_cw"], s["freq_ucw"])
        rng = job.rng(index, "sample")
        pool = cwe_words()
        # RULER shuffles the sorted pool with a fixed seed before sampling; a uniform sample is the same either way
        ex_items, ex_common = _example_list(
            rng.sample(pool, ex_words), self.num_cw, ex_cr, ex_ucr, *job.stream(index, "example")
        )
        example = HEAD + numbered(ex_items) + TAIL + T["answer_prefix"] + " " + numbered(ex_common)
        self.head = example + "\n" + HEAD
        self.gen_prefix = T["answer_prefix"]
        self.tail = TAIL
        self.small_pool, self.large_pool = pool, english_words()
        self.small_perm = Permutation(len(pool), *job.stream(index, "words"))
        self.large_perm = Permutation(len(self.large_pool), *job.stream(index, "english_words"))
        self.c_head = c.count_head(c.render_head(self.head, self.gen_prefix))
        self.tail_r = c.render_tail(self.tail, self.gen_prefix)
        self.numbers = indexed_counts(c, "cwe_numbers", lambda i: "1." if i == 1 else f" {i}.")
        self._drawn = {"small": ([], np.zeros(1, dtype=np.int64)), "large": ([], np.zeros(1, dtype=np.int64))}

    def _words(self, n: int) -> tuple[list[str], np.ndarray]:
        """The first n words drawn for an n-word list (the first num_cw are the common ones), as a
        view, and the cumulated tokens of " word" along them. Lists of up to 8k words draw from
        wonderwords, longer ones from the English list, as RULER does."""
        pool = "small" if n <= len(self.small_pool) else "large"
        words, csum = self._drawn[pool]
        if len(words) < n:
            perm, source = (self.small_perm, self.small_pool) if pool == "small" else (self.large_perm, self.large_pool)
            new = [source[i] for i in perm.take(n)[len(words) :]]
            counts = np.asarray(self.job.counter.count_many([" " + w for w in new]), dtype=np.int64)
            words += new
            csum = np.concatenate([csum, csum[-1] + np.cumsum(counts)])
            self._drawn[pool] = (words, csum)
        return words, csum

    def n_bounds(self) -> tuple[int, int]:
        per_item = 3 * self.ucr  # an uncommon word costs at least " i." + " w" per repeat
        lo, hi = self.num_cw + 1, min(len(self.large_pool), int(self.job.budget / per_item) + 64)
        switch = len(self.small_pool) + 1  # lists this long draw from the English list
        if hi < switch:
            return lo, hi
        # the estimate jumps where the pool changes: search one side only
        return (switch, hi) if self.estimate(switch) <= self.job.budget else (lo, switch - 1)

    def _count(self, n: int, last_word: str) -> int:
        _, csum = self._words(n)
        common, uncommon = int(csum[self.num_cw]), int(csum[n] - csum[self.num_cw])
        length = self.num_cw * self.cr + (n - self.num_cw) * self.ucr
        c = self.job.counter
        # the list's last item meets the question: count " word" + question together
        last = c.count_plain(" " + last_word + self.tail_r) - c.count_plain(" " + last_word)
        return self.c_head + self.numbers.upto(length) + self.cr * common + self.ucr * uncommon + last

    def estimate(self, n: int) -> int:
        return self._count(n, self._words(n)[0][0])

    def build(self, n: int) -> Built:
        words = self._words(n)[0][:n]
        items, common = _example_list(words, self.num_cw, self.cr, self.ucr, *self.job.stream(self.index, "order", n))
        text = self.head + numbered(items) + self.tail
        return Built(text, self.gen_prefix, list(common), self._count(n, items[-1]))
