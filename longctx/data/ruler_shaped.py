"""Needle documents in RULER's own wording (mix kind "magic"): an opt-in for small models.

The rest of the embedded corpus words its needles its own way, so that RULER measures
generalisation. A model of a few million parameters trained on that wording retrieves in it but
reads RULER's template only now and then (docs/results.md, exp7). This kind closes that gap on
purpose: NVIDIA's NIAH template, answer prefix and needle sentence (`eval_tasks.ruler.spec`),
with our keys, values and haystacks (generated prose or noise, never RULER's essays or its
"grass is green" line). A run that mixes it in trains on RULER's wording and must say so beside
its scores.
"""

from __future__ import annotations

import random

from eval_tasks.ruler.spec import NEEDLE, niah_strings
from longctx.data import synthetic
from longctx.data.tokenizer import render_chat

KIND = "magic"
VALUE_NAMES = {"number": "numbers", "word": "words", "uuid": "uuids"}  # RULER's type_needle_v
# single: one needle; multikey: distractor needles for other keys; crowded: the haystack is all
# distractor needles; multivalue: one key with several values; multiquery: several keys asked.
MODES = {"single": 0.4, "multikey": 0.15, "crowded": 0.1, "multivalue": 0.15, "multiquery": 0.2}


def _query(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + ", and " + keys[-1]


def magic_needles(
    rng: random.Random, n_chars: int, fillers=synthetic.HAYSTACKS, layout: synthetic.Layout = synthetic.PROSE
) -> dict[str, str]:
    """One document's pieces: head (before the haystack), body, question, prefix, answer
    (`layout`: line layout and short noise, synthetic.Layout)."""
    key_kind = synthetic._pick(rng, {"word": 0.8, "number": 0.1, "uuid": 0.1})
    val_kind = synthetic._pick(rng, {"number": 0.7, "uuid": 0.2, "word": 0.1})
    mode = synthetic._pick(rng, MODES)
    n_keys = {"multikey": rng.randint(2, 4), "multiquery": rng.randint(2, 4)}.get(mode, 1)
    n_values = rng.randint(2, 4) if mode == "multivalue" else 1
    keys = synthetic._unique(rng, lambda: synthetic.make_key(rng, key_kind), n_keys)
    values = synthetic._unique(rng, lambda: synthetic.make_value(rng, val_kind), n_keys * n_values)
    noun = VALUE_NAMES[val_kind]
    needle = lambda k, v: NEEDLE.format(type_needle_v=noun, key=k, value=v)  # noqa: E731
    pairs = [(k, v) for i, k in enumerate(keys) for v in values[i * n_values : (i + 1) * n_values]]
    rng.shuffle(pairs)
    needles = [needle(k, v) for k, v in pairs]
    asked = keys if mode == "multiquery" else [rng.choice(keys)]
    answer = [v for k in asked for kk, v in pairs if kk == k]

    budget = max(0, n_chars - sum(len(s) + 1 for s in needles) - 400)
    if mode == "crowded":
        filler = synthetic.distractors(rng, key_kind, val_kind, set(keys), budget, needle)
        sep = synthetic.distractor_sep(rng, layout)
    else:
        filler, sep = synthetic.haystack_units(rng, rng.choice(tuple(fillers)), budget, layout)
    template, prefix, singular = niah_strings(len(asked), n_values)
    noun = noun[:-1] if singular else noun
    head, tail = template.split("{context}")
    fields = dict(type_needle_v=noun, query=_query(asked))
    return {
        "head": head.format(**fields),
        "body": synthetic._scatter(rng, filler, needles, sep),
        "question": tail.format(**fields).lstrip("\n"),
        "prefix": prefix.format(**fields),
        "answer": ", ".join(answer) + ".",
    }


def render(doc: dict[str, str], chat: bool) -> str:
    """RULER's layout: head, haystack and question on their own lines, then prefix and answer
    (a chat exchange puts the prefix and answer in the assistant's turn)."""
    prompt = f"{doc['head']}\n{doc['body']}\n{doc['question']}"
    if chat:
        return render_chat(
            [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": f"{doc['prefix'].strip()} {doc['answer']}"},
            ]
        )
    return f"{prompt}{doc['prefix']} {doc['answer']}"
