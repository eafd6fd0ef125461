"""Mix kind "magic": needle documents in RULER's wording, checked against NVIDIA's NIAH template."""

import random
import re
from collections import Counter

from eval_tasks.ruler.spec import NOISE, TEMPLATES
from longctx.data import EmbeddedSource, ruler_shaped, synthetic, text
from longctx.data.tokenizer import render_chat

NEEDLE_RE = re.compile(r"One of the special magic (numbers|words|uuids) for (\S+) is: (\S+)\.")
# NVIDIA's single-needle prompt after its replacements (Some->A, are all->is, are->is), number values
SINGLE_HEAD = (
    "A special magic number is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the number afterwards."
)


def _parse(doc: str):
    head, rest = doc.split("\n", 1)
    body, tail = rest.rsplit("\n", 1)
    return head, body, tail, NEEDLE_RE.findall(body)


def test_plain_documents_are_nvidia_prompts_with_the_answer():
    src = EmbeddedSource(5, doc_chars=(400, 3000), mix={"magic": 1.0}, chat_fraction=0.0, fillers=("prose", "noise"))
    shapes = Counter()
    for i in range(300):
        doc = src.document(i)
        head, body, tail, needles = _parse(doc)
        kinds = {k for k, _, _ in needles}
        assert len(kinds) == 1, doc[:200]
        kind = kinds.pop()
        keys = list(dict.fromkeys(k for _, k, _ in needles))
        query = re.match(r"What (?:is|are all) the special magic \w+ for (.+) mentioned in the provided text\?", tail)
        asked = re.split(r", and |, ", query.group(1))
        assert asked and set(asked) <= set(keys), tail
        answer = [v for k in asked for _, kk, v in needles if kk == k]  # query order, as RULER lists them
        n_values = Counter(k for _, k, _ in needles)[asked[0]]
        singular = len(asked) * n_values == 1
        noun = kind[:-1] if singular else kind
        template = TEMPLATES["niah"]["template"] + TEMPLATES["niah"]["answer_prefix"]
        if singular:
            for old, new in (("Some", "A"), ("are all", "is"), ("are", "is")):
                template = template.replace(old, new)
        expected = (
            template.format(type_needle_v=noun, query=query.group(1), context=body) + " " + ", ".join(answer) + "."
        )
        assert doc == expected
        if singular and kind == "numbers":
            assert head == SINGLE_HEAD
        crowded = len(keys) > 4
        shapes[
            (
                "crowded"
                if crowded
                else "multiquery"
                if len(asked) > 1
                else "multivalue"
                if n_values > 1
                else "multikey"
                if len(keys) > 1
                else "single"
            )
        ] += 1
    assert set(shapes) == set(ruler_shaped.MODES), shapes


def _noise_sentence(s: str) -> bool:
    """One of our noise sentences: the fixed list, a stock phrase, or a generated short copula."""
    return (
        s in text.NOISE_SENTENCES
        or s in text.STOCK_PHRASES
        or re.fullmatch(r"(The|Every|A) [a-z]+ (is|looks) [a-z]+\.", s) is not None
    )


def _rulers_noise() -> list[str]:
    return [s + "." for s in NOISE.split(". ")[:-1]] + [NOISE.rsplit(". ", 1)[1]]


def test_haystacks_are_ours_not_rulers():
    src = EmbeddedSource(2, doc_chars=(3000, 6000), mix={"magic": 1.0}, chat_fraction=0.0, fillers=("noise",))
    for i in range(40):
        _, body, _, needles = _parse(src.document(i))
        assert not any(s in body for s in _rulers_noise()), body[:300]
        assert "\n" not in body.strip("\n")  # the default layout: running text
        rest = [s for s in re.split(r"(?<=\.)\s+", NEEDLE_RE.sub("", body).strip()) if s]
        if len(needles) <= 4:  # not the crowded mode: the filler is the shipped noise
            assert rest and all(s in text.NOISE_SENTENCES for s in rest), rest[:8]


def test_short_noise_is_generated_from_our_words_not_rulers():
    src = EmbeddedSource(
        2,
        doc_chars=(3000, 6000),
        mix={"magic": 1.0},
        chat_fraction=0.0,
        fillers=("noise",),
        layout=synthetic.Layout(short_noise=0.5),
    )
    generated = 0
    for i in range(40):
        _, body, _, needles = _parse(src.document(i))
        assert not any(s in body for s in _rulers_noise()), body[:300]
        rest = [s for s in re.split(r"(?<=\.)\s+", NEEDLE_RE.sub("", body).strip()) if s]
        if len(needles) <= 4:
            assert rest and all(_noise_sentence(s) for s in rest), rest[:8]
            generated += not any(s in text.NOISE_SENTENCES for s in rest)
    assert 5 <= generated <= 35  # both kinds of noise occur


def test_noise_and_distractor_haystacks_come_in_lines_as_rulers_do():
    """RULER's noise haystack (niah_single_1) repeats one line and puts the needle on a line of its
    own; its distractor haystack (niah_multikey_2/3) is one needle per line. With layout lines=0.5
    about half of our noise and crowded documents are laid out that way, the rest run on as prose."""
    src = EmbeddedSource(
        4,
        doc_chars=(1500, 4000),
        mix={"magic": 1.0},
        chat_fraction=0.0,
        fillers=("noise",),
        layout=synthetic.Layout(lines=0.5),
    )
    lined = flowing = 0
    for i in range(200):
        _, body, _, needles = _parse(src.document(i))
        lines = body.strip("\n").split("\n")
        if len(lines) == 1:
            flowing += 1
            continue
        lined += 1
        for line in lines:  # every line is a needle alone or a filler line
            assert NEEDLE_RE.fullmatch(line) or (not NEEDLE_RE.search(line) and line), line
        filler = [ln for ln in lines if not NEEDLE_RE.fullmatch(ln)]
        if filler:  # the noise haystack: one line, repeated
            assert len(set(filler)) == 1 and filler[0].endswith("."), filler[:3]
    assert 0.35 < lined / 200 < 0.75 and flowing > 40, (lined, flowing)


def test_a_zero_layout_leaves_every_document_as_it_was():
    """Layout(0, 0) draws nothing extra: the corpus (and the shipped tokenizer built from it) is unchanged,
    while a non-zero layout changes the needle documents of every filled kind."""
    kinds = {"kv": 1.0, "drill": 1.0, "chain": 1.0, "magic": 1.0, "prose": 1.0}
    plain = EmbeddedSource(7, doc_chars=(800, 3000), mix=kinds, fillers=("noise",))
    zero = EmbeddedSource(7, doc_chars=(800, 3000), mix=kinds, fillers=("noise",), layout=synthetic.Layout(0.0, 0.0))
    full = EmbeddedSource(7, doc_chars=(800, 3000), mix=kinds, fillers=("noise",), layout=synthetic.Layout(1.0, 1.0))
    changed = Counter()
    for i in range(60):
        assert plain.document(i) == zero.document(i)
        changed[plain.kind(i)] += plain.document(i) != full.document(i)
    assert changed["prose"] == 0 and all(changed[k] > 0 for k in ("kv", "drill", "chain", "magic")), changed


def test_chat_documents_put_prefix_and_answer_in_the_assistant_turn():
    doc = ruler_shaped.magic_needles(random.Random(0), 2000, ("prose",))
    chat = ruler_shaped.render(doc, chat=True)
    assert chat == render_chat(
        [
            {"role": "user", "content": f"{doc['head']}\n{doc['body']}\n{doc['question']}"},
            {"role": "assistant", "content": doc["prefix"].strip() + " " + doc["answer"]},
        ]
    )
    assert doc["prefix"].startswith(" The special magic")
