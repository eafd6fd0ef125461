"""QA (ruler_qa_squad, ruler_qa_hotpot), as NVIDIA/RULER's qa.py: the question's gold documents
plus distractors ("Document {i}:" blocks, shuffled), as many as fit. Sample i asks question i.

Distractors: first the other paragraphs of the gold paragraph's article (SQuAD), then any other
document; taken as prefixes of per-sample random orders so a larger n only adds documents.
"""

from __future__ import annotations

import numpy as np

from .qa_data import load_qa
from .sizing import Built
from .spec import DOCUMENT_PROMPT, TEMPLATES
from .tokens import indexed_counts
from .words import Permutation

T = TEMPLATES["qa"]
HEAD, TAIL = T["template"].split("{context}")


class QaDraft:
    def __init__(self, job, index: int):
        s, c = job.spec, job.counter
        self.job, self.index = job, index
        data = load_qa(s["dataset"], job.opts.get("qa_cache_dir"))
        self.docs = data.docs
        qa = data.qas[index % len(data.qas)]
        self.outputs = list(qa["outputs"])
        self.gold = list(qa["context"])
        more = list(qa["more_context"])
        job.rng(index, "more").shuffle(more)
        self.more = more
        self.others = Permutation(len(self.docs), *job.stream(index, "docs"))
        self.excluded = set(self.gold) | set(self.more)
        self.order: list[int] = self.gold + self.more  # gold, then same-article, then the rest as drawn
        self._drawn = 0
        self.csum = np.zeros(1, dtype=np.int64)
        self.tail = TAIL.format(query=qa["query"])
        self.gen_prefix = T["answer_prefix"]
        self.c_head = c.count_head(c.render_head(HEAD, self.gen_prefix))
        self.tail_r = c.render_tail(self.tail, self.gen_prefix)
        self.c_tail = c.count_plain(self.tail_r[2:])  # the tail starts with "\n\n"
        self.headers = indexed_counts(c, "qa_headers", lambda i: DOCUMENT_PROMPT.format(i=i, document=""))

    def _ids(self, n: int) -> list[int]:
        """Documents of an n-document context (as a set: order is shuffled when built)."""
        total = len(self.docs)
        if n >= total:  # RULER: (DOCS * repeats)[:n]
            return [i % total for i in range(n)]
        while len(self.order) < n:
            batch = self.others.take(self._drawn + max(64, n - len(self.order)))[self._drawn :]
            if not batch:
                raise ValueError(f"only {len(self.order)} documents for {n}")
            self._drawn += len(batch)
            self.order += [i for i in batch if i not in self.excluded]
        return self.order[:n]

    def _doc_tokens(self, n: int) -> int:
        """Tokens of the n documents, each followed by its "\\n\\n"."""
        if n >= len(self.docs):
            return sum(self.job.counter.count_many([self.docs[i] + "\n\n" for i in self._ids(n)]))
        ids = self._ids(n)
        if len(self.csum) <= n:
            counts = self.job.counter.count_many([self.docs[i] + "\n\n" for i in ids[len(self.csum) - 1 :]])
            self.csum = np.concatenate([self.csum, self.csum[-1] + np.cumsum(np.asarray(counts, dtype=np.int64))])
        return int(self.csum[n])

    def n_bounds(self) -> tuple[int, int]:
        probe = min(len(self.docs) - 1, 32)
        per_doc = max(8.0, (self._doc_tokens(probe) + self.headers.upto(probe)) / max(1, probe))
        return len(self.gold), int(self.job.budget / per_doc * 2) + 64

    def estimate(self, n: int) -> int:
        return self.c_head + self.headers.upto(n) + self._doc_tokens(n) + self.c_tail

    def build(self, n: int) -> Built:
        ids = list(self._ids(n))
        self.job.rng(self.index, "order", n).shuffle(ids)
        docs = [self.docs[i] for i in ids]
        context = "\n\n".join(DOCUMENT_PROMPT.format(i=j + 1, document=d) for j, d in enumerate(docs))
        c = self.job.counter
        # the last document meets the question: count it with the question exactly
        last = c.count_plain(docs[-1] + self.tail_r) - c.count_plain(docs[-1] + "\n\n") - self.c_tail
        return Built(HEAD + context + self.tail, self.gen_prefix, self.outputs, self.estimate(n) + last)
