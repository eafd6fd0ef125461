"""The embedded corpus: reproducible, sized as asked, answers that follow from the text, not RULER's wording.

Each task's answer is recomputed here from the document body alone (facts parsed back, assignments
executed, words counted), independently of how the generator chose it.
"""

import math
import random
import re
import statistics
from collections import Counter

import pytest

from longctx.data import EmbeddedSource, default_tokenizer, embedded_source, synthetic, text
from longctx.errors import UsageError

# NVIDIA RULER's prompt wording (scripts/data/synthetic/constants.py and the task templates).
RULER_PHRASES = [
    "special magic",
    "mentioned in the provided text",
    "Some special magic",
    "I will quiz you",
    "Find all variables that are assigned",
    "According to the chain(s) of variable assignment",
    "Memorize the ones that appear most often",
    "most common words in the above list",
    "Read the following coded text and track the frequency",
    "Do not provide any explanation",
    "The grass is green",
    "The sky is blue",
    "There and back again",
]


def rngs(n, base):
    return [random.Random(f"{base}-{i}") for i in range(n)]


def test_documents_are_reproducible_and_seeded():
    a, b, c = (
        EmbeddedSource(1, doc_chars=(200, 2000)),
        EmbeddedSource(1, doc_chars=(200, 2000)),
        EmbeddedSource(2, doc_chars=(200, 2000)),
    )
    assert [a.document(i) for i in range(20)] == [b.document(i) for i in range(20)]
    assert all(a.document(i) != c.document(i) for i in range(20))
    # another length range (a later, longer stage of the same run) gives other keys and values
    d = EmbeddedSource(1, doc_chars=(400, 4000), mix={"kv": 1.0})
    e = EmbeddedSource(1, doc_chars=(200, 2000), mix={"kv": 1.0})
    for i in range(20):
        *_, answer_d = synthetic.kv_recall(*d._plan(i)[::2])
        *_, answer_e = synthetic.kv_recall(*e._plan(i)[::2])
        assert answer_d != answer_e
    # any start position and any shard read the same documents
    assert list(zip(range(3), a.iter_epoch(0, 0, start=5), strict=False)) == [
        (0, (5, a.document(5))),
        (1, (6, a.document(6))),
        (2, (7, a.document(7))),
    ]
    it = a.iter_epoch(0, 0, start=5, rank=1, world_size=4)
    assert [next(it)[0] for _ in range(3)] == [5, 9, 13]


def test_character_sizes():
    lo, hi = 3000, 12000
    src = EmbeddedSource(0, doc_chars=(lo, hi), mix={"book": 1, "prose": 1})
    lens = [len(src.document(i)) for i in range(120)]
    # lengths are log-uniform over [lo, hi]; prose ends at a sentence end just past the target
    assert min(lens) >= lo and max(lens) <= hi * 1.5
    want_median = math.sqrt(lo * hi)
    assert 0.75 * want_median < statistics.median(lens) < 1.35 * want_median


def test_token_sizes_follow_doc_tokens():
    tok = default_tokenizer()
    src = embedded_source(3, doc_tokens=(512, 512), tokenizer=tok)
    lens = [len(tok.encode(src.document(i))) for i in range(80)]
    assert 0.85 * 512 < statistics.median(lens) < 1.3 * 512
    assert sum(200 < n < 1300 for n in lens) >= 0.95 * len(lens)


def _fact_regexes():
    out = []
    for t in synthetic.FACTS:
        pat = re.escape(t).replace(r"\{thing\}", r"(?P<thing>[a-z ]+?)").replace(r"\{key\}", r"(?P<key>[\w-]+)")
        out.append(re.compile(pat.replace(r"\{value\}", r"(?P<value>[\w-]+)")))
    return out


def test_kv_answers_follow_from_the_text():
    facts_re = _fact_regexes()
    seen_modes = Counter()
    for rng in rngs(150, "kv"):
        intro, body, q, prefix, answer = synthetic.kv_recall(rng, rng.choice([300, 3000, 20000]))
        facts = [(m["key"], m["value"]) for r in facts_re for m in r.finditer(body)]
        facts.sort(key=lambda kv: body.index(kv[1]))
        asked = [k for k in {k for k, _ in facts} if re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", q)]
        asked.sort(key=q.index)
        assert asked, q
        want = [v for k in asked for kk, v in facts if kk == k]
        got = re.split(r", | and ", answer.rstrip("."))
        assert got == want
        assert all(k in prefix for k in asked)  # the answer prefix restates what is asked
        seen_modes["multi_value" if len(want) > len(asked) else ("multi_query" if len(asked) > 1 else "one")] += 1
    assert min(seen_modes.values()) >= 10, seen_modes


def test_recall_drill_answers_every_question_from_the_text():
    facts_re = _fact_regexes()

    def pattern(t):
        return re.compile(re.escape(t).replace(r"\{thing\}", r"[a-z ]+?").replace(r"\{key\}", r"(?P<key>[\w-]+)"))

    questions = [pattern(q) for q, _ in synthetic.ASK_ONE]
    prefixes = [re.compile(pattern(p).pattern + r" (?P<value>[\w-]+)\.") for _, p in synthetic.ASK_ONE]
    n_questions = Counter()
    for rng in rngs(120, "drill"):
        doc = synthetic.render(rng, synthetic.recall_drill(rng, rng.choice([400, 2000, 12000])), chat=False)
        facts = dict((m["key"], m["value"]) for r in facts_re for m in r.finditer(doc))
        lines = doc.splitlines()
        asked = []
        for i, line in enumerate(lines):
            q = next((m for r in questions if (m := r.fullmatch(line.removeprefix("Question: ")))), None)
            if q is None:
                continue
            a = next(m for r in prefixes if (m := r.fullmatch(lines[i + 1].removeprefix("Answer: "))))
            assert a["key"] == q["key"] and facts[q["key"]] == a["value"]
            assert doc.index(a["value"]) < doc.index(line)  # the fact comes before its question
            asked.append(q["key"])
        assert len(asked) >= 2 and len(set(asked)) == len(asked)  # distinct keys asked
        n_questions[len(asked)] += 1
        for phrase in RULER_PHRASES:
            assert phrase.lower() not in doc.lower(), phrase
    assert min(n_questions) == 2 and max(n_questions) == 8
    # off unless a mix asks for it
    assert "drill" not in {EmbeddedSource(0).kind(i) for i in range(3000)}
    assert {EmbeddedSource(0, mix={"drill": 1.0}).kind(i) for i in range(50)} == {"drill"}


def _chain_regex(template, name):
    pat = re.escape(template).replace(r"\{a\}", rf"(?P<a>{name})").replace(r"\{b\}", rf"(?P<b>{name})")
    return re.compile(pat.replace(r"\{v\}", r"(?P<v>\d+)"))


def test_variable_chain_answers_follow_from_the_text():
    for rng in rngs(120, "vt"):
        intro, body, q, prefix, answer = synthetic.variable_chain(rng, rng.choice([400, 4000]))
        v = re.search(r"\d+", q).group()
        name = r"[A-Z]{4,6}|[a-z]+"
        events = []
        for t in synthetic.CHAIN_INIT:
            events += [(m.start(), "init", m["a"], m["v"]) for m in _chain_regex(t, name).finditer(body)]
        for t in synthetic.CHAIN_COPY:
            events += [(m.start(), "copy", m["b"], m["a"]) for m in _chain_regex(t, name).finditer(body)]
        values = {}
        for _, kind, dst, src in sorted(events):
            if kind == "init":
                values[dst] = src
            elif src in values:  # ignore look-alike sentences of the filler about unknown names
                values[dst] = values[src]
        holders = [n for n, val in values.items() if val == v]
        assert sorted(answer.rstrip(".").split(", ")) == sorted(holders)
        assert v in prefix


def _topk_check(seq, answer, k):
    counts = Counter(seq)
    ranked = counts.most_common()
    got = answer.rstrip(".").split(", ")
    assert len(got) == k
    assert [w for w, _ in ranked[:k]] == got
    assert ranked[k - 1][1] > (ranked[k][1] if len(ranked) > k else 0)  # no tie at the cut


def test_common_words_answer_is_the_true_top_k():
    for rng in rngs(80, "cwe"):
        intro, body, q, prefix, answer = synthetic.common_words(rng, rng.choice([500, 5000, 40000]))
        seq = re.findall(r"[a-z]+", re.sub(r"^\d+\. ", "", body, flags=re.M))
        k = int(re.search(r"\d+", q).group())
        _topk_check(seq, answer, k)


def test_frequent_coded_words_answer_is_the_true_top_3():
    for rng in rngs(80, "fwe"):
        intro, body, q, prefix, answer = synthetic.frequent_coded(rng, rng.choice([300, 5000, 40000]))
        _topk_check(body.split(), answer, 3)


def test_no_ruler_wording_and_chat_share():
    src = EmbeddedSource(7, doc_chars=(300, 3000), chat_fraction=0.5)
    docs = [src.document(i) for i in range(400)]
    for d in docs:
        for phrase in RULER_PHRASES:
            assert phrase.lower() not in d.lower(), phrase
    templates = " ".join(
        [
            *synthetic.FACTS,
            *synthetic.INTROS,
            *(
                x
                for pair in synthetic.ASK_ONE + synthetic.ASK_ALL_VALUES + synthetic.ASK_MANY_KEYS + synthetic.ASK_CHAIN
                for x in pair
            ),
            *synthetic.CHAIN_INIT,
            *synthetic.CHAIN_COPY,
            *text.NOISE_SENTENCES,
        ]
    )
    for phrase in RULER_PHRASES:
        assert phrase.lower() not in templates.lower()
    chat = [d for d in docs if d.startswith("<|user|>\n")]
    tasks = [d for i, d in enumerate(docs) if src.kind(i) in synthetic.TASKS]
    assert all(src.kind(i) in synthetic.TASKS for i, d in enumerate(docs) if d in chat)
    assert chat and all(d.endswith("<|end|>\n") and "<|end|>\n<|assistant|>\n" in d for d in chat)
    # half of the task documents (not the prose ones) are chat exchanges
    assert 0.35 < len(chat) / len(tasks) < 0.65
    plain = EmbeddedSource(7, doc_chars=(300, 3000), chat_fraction=0.0)
    assert not any("<|user|>" in plain.document(i) for i in range(100))


def test_mix_is_respected():
    src = EmbeddedSource(0, doc_chars=(200, 400), mix={"freq": 1.0})
    assert all("coded" in src.document(i) or "codes" in src.document(i) for i in range(20))
    mix = {"book": 1.0, "kv": 3.0}
    src = EmbeddedSource(0, doc_chars=(200, 400), mix=mix)
    kinds = Counter(src.kind(i) for i in range(2000))
    assert set(kinds) == set(mix)
    sd = math.sqrt(2000 * 0.25 * 0.75)  # Binomial(2000, 1/4) for "book"
    assert abs(kinds["book"] - 500) < 4 * sd


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mix": {"poetry": 1.0}}, "accepted kinds"),
        ({"mix": {"kv": -1.0}}, "non-negative"),
        ({"doc_chars": (10, 5)}, "1 <= min <= max"),
        ({"chat_fraction": 2.0}, "chat_fraction"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(UsageError, match=match):
        EmbeddedSource(0, **kwargs)
    with pytest.raises(UsageError, match="not both"):
        embedded_source(0, doc_tokens=(1, 2), doc_chars=(1, 2))


def test_natural_text_is_the_shipped_book():
    book = text.book()
    assert "THE DEVIL'S DICTIONARY" in book and "A Public Domain Text, Copyright Expired" in book
    assert 300_000 < len(book) < 450_000
    rng = random.Random(0)
    for _ in range(20):
        ex = text.excerpt(rng, 2000)
        assert len(ex) >= 2000 and ex.split("\n\n")[0] in text.paragraphs()
    prose = text.markov_prose(random.Random(1), 3000)
    assert len(prose) >= 3000 and prose.rstrip()[-1] in ".!?"
    assert prose not in book  # generated, not copied


def _book_shingles(n: int = 8) -> set[tuple[str, ...]]:
    words = text.book().split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n)}


def _has_book_run(doc: str, shingles, n: int = 8) -> bool:
    words = doc.split()
    return any(tuple(words[i : i + n]) in shingles for i in range(len(words) - n))


def test_fillers_keep_the_book_out_of_the_needle_tasks(monkeypatch):
    """data.fillers without `book`: kv, drill and chain documents take no book excerpt (the verbatim
    text a small model memorises), with noise alone no 8-word run of the book at all (the default
    fillers give many); the documents' kinds do not change."""
    shingles = _book_shingles()
    mix = {"kv": 1.0, "drill": 1.0, "chain": 1.0}
    plain = EmbeddedSource(seed=3, doc_chars=(3000, 6000), mix=mix)
    docs = [plain.document(i) for i in range(30)]
    assert sum(_has_book_run(d, shingles) for d in docs) >= 5
    noise = EmbeddedSource(seed=3, doc_chars=(3000, 6000), mix=mix, fillers=("noise",))
    assert not any(_has_book_run(noise.document(i), shingles) for i in range(30))

    def no_excerpt(*a, **k):
        raise AssertionError("a book excerpt was drawn")

    monkeypatch.setattr(text, "excerpt", no_excerpt)
    clean = EmbeddedSource(seed=3, doc_chars=(3000, 6000), mix=mix, fillers=("prose", "noise"))
    assert [clean.kind(i) for i in range(30)] == [plain.kind(i) for i in range(30)]
    assert all(clean.document(i) for i in range(30))
    with pytest.raises(UsageError, match="fillers"):
        EmbeddedSource(fillers=("essays",))
