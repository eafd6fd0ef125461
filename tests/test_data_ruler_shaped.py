"""Mix kind "magic": needle documents in RULER's wording, checked against NVIDIA's NIAH template."""

import random
import re
from collections import Counter

from eval_tasks.ruler.spec import TEMPLATES
from longctx.data import EmbeddedSource, ruler_shaped, text
from longctx.data.tokenizer import render_chat

NEEDLE_RE = re.compile(r"One of the special magic (numbers|words|uuids) for (\S+) is: (\S+)\.")
# NVIDIA's single-needle prompt after its replacements (Some->A, are all->is, are->is), number values
SINGLE_HEAD = ("A special magic number is hidden within the following text. Make sure to memorize it. "
               "I will quiz you about the number afterwards.")


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
        expected = template.format(type_needle_v=noun, query=query.group(1), context=body) + " " + ", ".join(answer) + "."
        assert doc == expected
        if singular and kind == "numbers":
            assert head == SINGLE_HEAD
        crowded = len(keys) > 4
        shapes[("crowded" if crowded else "multiquery" if len(asked) > 1 else "multivalue" if n_values > 1
                else "multikey" if len(keys) > 1 else "single")] += 1
    assert set(shapes) == set(ruler_shaped.MODES), shapes


def test_haystacks_are_ours_not_rulers():
    src = EmbeddedSource(2, doc_chars=(3000, 6000), mix={"magic": 1.0}, chat_fraction=0.0, fillers=("noise",))
    noise = set(text.NOISE_SENTENCES)
    for i in range(40):
        _, body, _, needles = _parse(src.document(i))
        assert "The grass is green" not in body
        rest = NEEDLE_RE.sub("", body).split()
        if len(needles) <= 4:  # not the crowded mode: the filler is our noise
            assert rest and any(s in body for s in noise)


def test_chat_documents_put_prefix_and_answer_in_the_assistant_turn():
    doc = ruler_shaped.magic_needles(random.Random(0), 2000, ("prose",))
    chat = ruler_shaped.render(doc, chat=True)
    assert chat == render_chat([
        {"role": "user", "content": f"{doc['head']}\n{doc['body']}\n{doc['question']}"},
        {"role": "assistant", "content": doc["prefix"].strip() + " " + doc["answer"]},
    ])
    assert doc["prefix"].startswith(" The special magic")
