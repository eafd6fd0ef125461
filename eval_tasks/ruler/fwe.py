"""Frequent words extraction (ruler_fwe), as NVIDIA/RULER's freq_words_extraction.py.

A coded text of random 6-letter words whose counts follow a Zeta(alpha) law over a vocabulary
of (max_seq_length - tokens_to_generate) // 50 words; the most frequent word is replaced by '...'
(noise), so the answer is the words of ranks 2-4.
"""

from __future__ import annotations

import string

import numpy as np
from scipy.special import zeta

from .rng import shuffled
from .sizing import Built
from .spec import TEMPLATES

T = TEMPLATES["freq_words_extraction"]
HEAD, TAIL = T["template"].split("{context}")


class FweDraft:
    def __init__(self, job, index: int):
        s, c = job.spec, job.counter
        self.job, self.index = job, index
        self.alpha = float(s["alpha"])
        vocab_size = job.budget // 50 if s["vocab_size"] == -1 else s["vocab_size"]
        vocab_size = max(vocab_size, 4)
        rng = job.rng(index, "sample")
        vocab = ["".join(rng.choices(string.ascii_lowercase, k=s["coded_wordlen"])) for _ in range(vocab_size)]
        while len(set(vocab)) < vocab_size:
            vocab.append("".join(rng.choices(string.ascii_lowercase, k=s["coded_wordlen"])))
        vocab = sorted(set(vocab))
        rng.shuffle(vocab)
        vocab[0] = "..."  # the top-ranked word is noise
        self.vocab = vocab
        self.ranks = np.arange(1, len(vocab) + 1)
        # the context follows "...coded words. ": count that space with the first word, like every other
        assert HEAD.endswith(" ")
        self.head = HEAD
        self.tail = TAIL
        self.gen_prefix = T["answer_prefix"]
        self.c_head = c.count_head(c.render_head(HEAD[:-1], self.gen_prefix))
        self.tail_r = c.render_tail(TAIL, self.gen_prefix)
        self.c_words = np.asarray(c.count_many([" " + w for w in vocab]), dtype=np.int64)

    def counts(self, n: int) -> np.ndarray:
        # RULER's arithmetic, in its order, so the floors land the same
        return (n * (self.ranks**-self.alpha) / zeta(self.alpha)).astype(int)

    def n_bounds(self) -> tuple[int, int]:
        return 2, int(self.job.budget * 1.5) + 64  # n >= 2 puts at least one word in the text

    def _count(self, n: int, last_word: str) -> int:
        c = self.job.counter
        last = c.count_plain(" " + last_word + self.tail_r) - c.count_plain(" " + last_word)
        return self.c_head + int(self.counts(n) @ self.c_words) + last

    def estimate(self, n: int) -> int:
        return self._count(n, self.vocab[-1])

    def build(self, n: int) -> Built:
        cnt = self.counts(n)
        words = shuffled(
            [w for w, k in zip(self.vocab, cnt, strict=True) for _ in range(int(k))],
            *self.job.stream(self.index, "order", n),
        )
        text = self.head + " ".join(words) + self.tail
        return Built(text, self.gen_prefix, list(self.vocab[1:4]), self._count(n, words[-1]))
