"""Synthetic long-range documents: key-value recall, variable chains, word counting, frequency.

Each task hides the information a question needs somewhere in a long filler and ends with the
question and its answer, so a small model learns retrieval over distance. The kinds mirror what
RULER measures (needles, multi-key/value/query, variable tracking, common/frequent words), but the
wording is our own: nothing here reuses RULER's templates, so RULER scores still measure
generalisation, not memorised phrasing. Many phrasings per task keep the model from keying on one.
"""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass

from longctx.data import text
from longctx.data.tokenizer import render_chat
from longctx.errors import UsageError

# What a hidden value is called, by value kind.
THINGS = {
    "number": (
        "access code",
        "locker number",
        "reference number",
        "ticket number",
        "serial number",
        "account number",
        "lucky number",
        "room number",
        "catalog number",
        "secret number",
        "pin code",
        "badge number",
        "passcode",
        "order number",
    ),
    "word": ("password", "codeword", "watchword", "secret word", "signal word", "hidden word"),
    "uuid": ("identifier", "tracking id", "serial tag", "registry key", "token string", "hidden id"),
}

FACTS = (
    "Remember: the {thing} for {key} is {value}.",
    "The {thing} assigned to {key} is {value}.",
    "For the record, the {thing} of {key} is {value}.",
    "Note that {key} was given the {thing} {value}.",
    "Write this down: {key} has the {thing} {value}.",
    "The {thing} that belongs to {key} is {value}.",
    "Keep in mind that the {thing} for {key} is {value}.",
    "Entry for {key}: {thing} {value}.",
)

INTROS = (
    "Hidden in the text below are one or more {thing}s. Read all of it; a question about them comes at the end.",
    "The passage that follows records {thing}s for some names. Keep track of them.",
    "Below is a long text. A few sentences in it give a {thing}. Remember them for the question at the end.",
    "Read the following carefully. Somewhere in it, {thing}s are written down.",
)

# (question, answer prefix) pairs; the prefix restates the question so the answer is a continuation.
ASK_ONE = (
    ("What is the {thing} for {key}?", "The {thing} for {key} is"),
    ("Which {thing} was given to {key} in the text above?", "The {thing} given to {key} is"),
    ("Look back through the passage: what {thing} belongs to {key}?", "The {thing} that belongs to {key} is"),
    ("Find the {thing} that was noted for {key}.", "The {thing} noted for {key} is"),
    ("Recall the {thing} of {key}.", "The {thing} of {key} is"),
)
ASK_ALL_VALUES = (
    ("List every {thing} that the text gives for {key}.", "The {thing}s given for {key} are"),
    ("{key} was given several {thing}s. What are they?", "The {thing}s of {key} are"),
)
ASK_MANY_KEYS = (
    ("What are the {thing}s for {keys}?", "The {thing}s for {keys} are"),
    ("Give the {thing} of each of {keys}, in that order.", "In order, the {thing}s of {keys} are"),
)

CHAIN_INIT = ("Let {a} be {v}.", "Set {a} to {v}.", "{a} starts out holding {v}.", "Assign {v} to {a}.")
CHAIN_COPY = ("Let {b} be {a}.", "Set {b} equal to {a}.", "{b} takes the value of {a}.", "Copy {a} into {b}.")
ASK_CHAIN = (
    ("Which names end up holding the value {v}?", "The names holding {v} are"),
    ("Follow the assignments in the text. Which names equal {v} in the end?", "The names equal to {v} are"),
    ("Trace every name that receives {v}, directly or through another name.", "The names that receive {v} are"),
)

HAYSTACKS = ("book", "prose", "noise")
FILLED = ("kv", "drill", "chain")  # the tasks that hide their facts in a haystack (`fillers=` applies)


def _filler(choice: str, fillers) -> str:
    """A drawn haystack kind, or an allowed one (prose first) when the run excludes it (the draw is
    made as before, so the facts, keys and values drawn ahead of the filler do not change)."""
    if choice not in HAYSTACKS or choice in fillers:
        return choice
    return next(k for k in ("prose", "noise", "book") if k in fillers)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def make_key(rng: random.Random, kind: str) -> str:
    w = text.words()
    if kind == "word":
        return f"{rng.choice(w['adjective'])}-{rng.choice(w['noun'])}"
    if kind == "number":
        return str(rng.randint(10**6, 10**7 - 1))
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_value(rng: random.Random, kind: str) -> str:
    if kind == "number":
        digits = rng.choice((5, 6, 7, 7, 7, 8))
        return str(rng.randint(10 ** (digits - 1), 10**digits - 1))
    if kind == "word":
        return rng.choice(text.words()["noun"])
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _unique(rng: random.Random, make, n: int, taken: set | None = None) -> list[str]:
    taken = set() if taken is None else taken
    out = []
    while len(out) < n:
        x = make()
        if x not in taken:
            taken.add(x)
            out.append(x)
    return out


@dataclass(frozen=True)
class Layout:
    """How needle documents lay out their haystacks (data.line_layout / data.short_noise in a run
    config; all 0 = running text and the shipped noise sentences, the corpus as it always was).

    lines: the share of noise and all-distractor haystacks (kv, magic) laid out as RULER lays out
    its noise and distractor haystacks (niah_single_1, niah_multikey_2/3): each filler unit and each
    needle on a line of its own. short_noise: the share of noise haystacks (every filled task) made of
    short generated sentences (text.noise_cycle)."""

    lines: float = 0.0
    short_noise: float = 0.0

    def __post_init__(self):
        for name in ("lines", "short_noise"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise UsageError(f"embedded layout {name}={v!r}: accepted 0..1")


PROSE = Layout()


def haystack_units(rng: random.Random, kind: str, n_chars: int, layout: Layout = PROSE) -> tuple[list[str], str]:
    """(filler units, separator) for a needle document's haystack of `kind` (book, prose, noise):
    noise comes in lines `layout.lines` of the time, everything else as sentences of running text."""
    if kind == "noise" and layout.lines and rng.random() < layout.lines:
        return text.noise_lines(rng, n_chars, layout.short_noise), "\n"
    return text.filler_sentences(rng, kind, n_chars, layout.short_noise), " "


def distractor_sep(rng: random.Random, layout: Layout = PROSE) -> str:
    """The separator of an all-distractor haystack: one needle per line `layout.lines` of the time."""
    return "\n" if layout.lines and rng.random() < layout.lines else " "


def _scatter(rng: random.Random, filler: list[str], items: list[str], sep: str = " ") -> str:
    """Insert items between filler units (sentences, or lines with sep="\\n") at random places,
    keeping their order."""
    slots = sorted(rng.randint(0, len(filler)) for _ in items)
    out, j = [], 0
    for i in range(len(filler) + 1):
        while j < len(items) and slots[j] == i:
            out.append(items[j])
            j += 1
        if i < len(filler):
            out.append(filler[i])
    return sep.join(out)


def distractors(rng: random.Random, key_kind: str, val_kind: str, taken: set, budget: int, sentence) -> list[str]:
    """Facts about fresh keys (none of `taken`, which grows) until `budget` characters are filled:
    a haystack made only of distractors. sentence(key, value) words one fact."""
    out, size = [], 0
    while size < budget:
        k = _unique(rng, lambda: make_key(rng, key_kind), 1, taken)[0]
        out.append(sentence(k, make_value(rng, val_kind)))
        size += len(out[-1]) + 1
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def kv_recall(
    rng: random.Random, n_chars: int, fillers=HAYSTACKS, layout: Layout = PROSE
) -> tuple[str, str, str, str, str]:
    """Needles among filler: single, multi-key (distractor keys), multi-value or multi-query."""
    key_kind = _pick(rng, {"word": 0.6, "number": 0.25, "uuid": 0.15})
    val_kind = _pick(rng, {"number": 0.6, "word": 0.2, "uuid": 0.2})
    thing = rng.choice(THINGS[val_kind])
    mode = _pick(rng, {"single": 0.35, "multikey": 0.25, "multivalue": 0.15, "multiquery": 0.25})
    fact = rng.choice(FACTS)
    keys = _unique(rng, lambda: make_key(rng, key_kind), 1 if mode in ("single", "multivalue") else rng.randint(2, 4))
    n_values = rng.randint(2, 5) if mode == "multivalue" else 1
    values = _unique(rng, lambda: make_value(rng, val_kind), len(keys) * n_values)
    pairs = [(k, v) for i, k in enumerate(keys) for v in values[i * n_values : (i + 1) * n_values]]
    rng.shuffle(pairs)  # the text order; several values of one key are answered in this order
    facts = [fact.format(thing=thing, key=k, value=v) for k, v in pairs]
    asked = keys if mode == "multiquery" else [rng.choice(keys)]
    asked_values = [v for k in asked for kk, v in pairs if kk == k]

    haystack = _filler(_pick(rng, {"book": 0.35, "prose": 0.25, "noise": 0.2, "facts": 0.2}), fillers)
    budget = max(0, n_chars - sum(len(f) + 1 for f in facts) - 200)
    if haystack == "facts":
        # Every filler sentence is a distractor fact about another key: retrieval must match the key.
        filler = distractors(
            rng, key_kind, val_kind, set(keys), budget, lambda k, v: fact.format(thing=thing, key=k, value=v)
        )
        sep = distractor_sep(rng, layout)
    else:
        filler, sep = haystack_units(rng, haystack, budget, layout)
    body = _scatter(rng, filler, facts, sep)

    if mode == "multivalue":
        q, prefix = rng.choice(ASK_ALL_VALUES)
    elif mode == "multiquery":
        q, prefix = rng.choice(ASK_MANY_KEYS)
    else:
        q, prefix = rng.choice(ASK_ONE)
    fields = dict(thing=thing, key=asked[0], keys=_and(asked))
    intro = rng.choice(INTROS).format(thing=thing)
    return intro, body, q.format(**fields), prefix.format(**fields), _and(asked_values) + "."


def recall_drill(
    rng: random.Random, n_chars: int, fillers=HAYSTACKS, layout: Layout = PROSE
) -> tuple[str, str, str, str, str]:
    """Dense recall: many facts in filler, then several questions in a fresh order, each answered.

    Every answer needs a lookup by key, so one document carries several retrieval targets (a
    needle document carries one): the signal a small model needs to form retrieval heads early.
    """
    key_kind = _pick(rng, {"word": 0.7, "number": 0.3})
    val_kind = _pick(rng, {"number": 0.7, "word": 0.15, "uuid": 0.15})
    thing = rng.choice(THINGS[val_kind])
    per_fact = 60 if val_kind != "uuid" else 90
    n = max(2, min(32, n_chars // (3 * per_fact)))
    n = rng.randint(max(2, n // 2), n)
    fact = rng.choice(FACTS)
    keys = _unique(rng, lambda: make_key(rng, key_kind), n)
    values = _unique(rng, lambda: make_value(rng, val_kind), n)
    facts = [fact.format(thing=thing, key=k, value=v) for k, v in zip(keys, values, strict=True)]
    qa_chars = 110 * min(n, 8)
    haystack = _filler(rng.choice(HAYSTACKS + ("none",)), fillers)
    budget = max(0, n_chars - sum(len(f) + 1 for f in facts) - qa_chars - 150)
    filler = [] if haystack == "none" else text.filler_sentences(rng, haystack, budget, layout.short_noise)
    body = _scatter(rng, filler, facts)
    asked = rng.sample(range(n), min(n, rng.randint(2, 8)))
    qa = []
    for i in asked:
        q, prefix = rng.choice(ASK_ONE)
        qa.append((q.format(thing=thing, key=keys[i]), prefix.format(thing=thing, key=keys[i]), values[i] + "."))
    earlier = "\n\n".join(f"{q}\n{p} {a}" for q, p, a in qa[:-1])
    intro = rng.choice(INTROS).format(thing=thing)
    q, p, a = qa[-1]
    return intro, body + "\n\n" + earlier, q, p, a


def _var_name(rng: random.Random, kind: str) -> str:
    if kind == "caps":
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(4, 6)))
    return rng.choice(text.words()["noun"])


def variable_chain(
    rng: random.Random, n_chars: int, fillers=HAYSTACKS, layout: Layout = PROSE
) -> tuple[str, str, str, str, str]:
    """Chains of assignments (a = 12345, b = a, c = b ...) scattered in filler; ask who holds a value."""
    name_kind = rng.choice(("caps", "word"))
    n_chains = rng.randint(1, 4)
    init, copy = rng.choice(CHAIN_INIT), rng.choice(CHAIN_COPY)
    names = _unique(rng, lambda: _var_name(rng, name_kind), n_chains * 6)
    chain_values = _unique(rng, lambda: str(rng.randint(10000, 99999)), n_chains)
    chains, statements = [], []
    for c in range(n_chains):
        hops = rng.randint(2, 6)
        chain = names[c * 6 : c * 6 + hops]
        chains.append(chain)
        lines = [init.format(a=chain[0], v=chain_values[c])]
        lines += [copy.format(a=a, b=b) for a, b in zip(chain, chain[1:], strict=False)]
        statements.append(lines)
    # Merge the chains in a random interleaving that keeps each chain's order.
    merged, heads = [], [0] * n_chains
    while len(merged) < sum(map(len, statements)):
        c = rng.choice([i for i in range(n_chains) if heads[i] < len(statements[i])])
        merged.append(statements[c][heads[c]])
        heads[c] += 1
    filler = text.filler_sentences(
        rng, _filler(rng.choice(HAYSTACKS), fillers), max(0, n_chars - 400), layout.short_noise
    )
    body = _scatter(rng, filler, merged)
    target = rng.randrange(n_chains)
    q, prefix = rng.choice(ASK_CHAIN)
    intro = rng.choice(
        (
            "The text below contains assignments between names. Track where each value goes.",
            "Some sentences in the following text pass values from one name to another.",
        )
    )
    v = chain_values[target]
    return intro, body, q.format(v=v), prefix.format(v=v), ", ".join(chains[target]) + "."


def common_words(rng: random.Random, n_chars: int) -> tuple[str, str, str, str, str]:
    """A long word list in which k words repeat far more often than the rest; name them."""
    k = rng.randint(3, 10)
    total = max(4 * k + 10, n_chars // 9)
    hi = max(6 + k, total // (3 * k))
    counts = sorted(rng.sample(range(4, hi + 1), k), reverse=True)
    top = _unique(rng, lambda: rng.choice(text.words()["noun"]), k)
    n_rare = max(1, (total - sum(counts)) * 2 // 3)
    rare = _unique(rng, lambda: rng.choice(text.words()["noun"]), min(n_rare, 4000), set(top))
    seq = [w for w, c in zip(top, counts, strict=True) for _ in range(c)]
    # Rare words appear once or twice: always below the top words' minimum count of 4.
    seq += [w for w in rare for _ in range(rng.choice((1, 1, 2)))]
    rng.shuffle(seq)
    if rng.random() < 0.5:
        body = "\n".join(f"{i}. {w}" for i, w in enumerate(seq, 1))
    else:
        body = ", ".join(seq) + "."
    intro = rng.choice(
        (
            "Here is a long list of words. A few of them are repeated many more times than the others.",
            "The following word list has some words that come up again and again.",
        )
    )
    q, prefix = rng.choice(
        (
            (f"Which {k} words appear most often in the list?", f"The {k} words that appear most often are"),
            (f"Name the {k} words repeated the most, most frequent first.", f"The {k} most repeated words are"),
        )
    )
    return intro, body, q, prefix, ", ".join(top) + "."


def frequent_coded(rng: random.Random, n_chars: int) -> tuple[str, str, str, str, str]:
    """Made-up words with a skewed (Zipf-like) frequency; name the three commonest."""
    vocab = _unique(
        rng, lambda: "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 6))), rng.randint(12, 40)
    )
    n = max(60, n_chars // 5)
    weights = [1.0 / (i + 1) ** rng.uniform(1.0, 2.0) for i in range(len(vocab))]
    counts = [max(1, round(n * w / sum(weights))) for w in weights]
    for i in range(3):  # the top three strictly above everything after them
        counts[i] = max(counts[i], max(counts[i + 1 :]) + 1 + (2 - i))
    seq = [w for w, c in zip(vocab, counts, strict=True) for _ in range(c)]
    rng.shuffle(seq)
    per_line = rng.randint(8, 16)
    body = "\n".join(" ".join(seq[i : i + per_line]) for i in range(0, len(seq), per_line))
    intro = rng.choice(
        (
            "Below is a stream of coded words. Some codes occur much more often than others.",
            "Count the coded words in the following text as you read it.",
        )
    )
    q, prefix = rng.choice(
        (
            ("Which three coded words occur most often above?", "The three commonest coded words are"),
            ("Give the three most frequent codes, most frequent first.", "The three most frequent codes are"),
        )
    )
    return intro, body, q, prefix, ", ".join(vocab[:3]) + "."


TASKS = {
    "kv": kv_recall,
    "drill": recall_drill,
    "chain": variable_chain,
    "common": common_words,
    "freq": frequent_coded,
}


def render(rng: random.Random, parts: tuple[str, str, str, str, str], chat: bool) -> str:
    """Plain text (question, then 'prefix answer') or one chat exchange in the tokenizer's format."""
    intro, body, question, prefix, answer = parts
    if chat:
        return render_chat(
            [
                {"role": "user", "content": f"{intro}\n\n{body}\n\n{question}"},
                {"role": "assistant", "content": f"{prefix} {answer}"},
            ]
        )
    lead = rng.choice(("", "Answer: "))
    q = rng.choice(("", "Question: ")) + question
    return f"{intro}\n\n{body}\n\n{q}\n{lead}{prefix} {answer}"
