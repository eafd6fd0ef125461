"""Variable tracking (ruler_vt), as NVIDIA/RULER's scripts/data/synthetic/variable_tracking.py.

A chain VAR A = 12345, VAR B = VAR A, ... (num_hops hops) hidden among noise sentences, one per
line; the question asks for every variable holding the value. A one-shot example (3-letter
names, value 12345, sized to <= 500 tokens) precedes the prompt, its names and value redrawn for
every sample, as RULER does.
"""

from __future__ import annotations

import re
import string

from .rng import stream
from .sizing import Built, largest_fitting
from .spec import NOISE, TEMPLATES

T = TEMPLATES["variable_tracking"]
HEAD, TAIL = T["template"].split("{context}")
ICL_MAX_TOKENS = 500


def _names(rng, count: int, length: int, avoid=()) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=length))
        if name not in out and name not in avoid and name != "VAR":
            out.append(name)
    return out


def _chain(names: list[str], value: str) -> list[str]:
    # RULER's lines, trailing space included on the hops
    return [f"VAR {names[0]} = {value}"] + [f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(len(names) - 1)]


def _context(n: int, chain: list[str], rng) -> str:
    lines = [NOISE] * n
    positions = sorted(rng.sample(range(n), len(chain)))
    for j, pos in enumerate(positions):
        lines.insert(pos + j, chain[j])
    return "\n".join(lines).replace(". \n", ".\n")


def _prompt(context: str, value: str, num_v: int) -> tuple[str, str]:
    """(prompt, answer prefix) of RULER's template."""
    return HEAD + context + TAIL.format(query=value), T["answer_prefix"].format(num_v=num_v, query=value)


def icl_example(job) -> str:
    """RULER's one-shot example: prompt + answer prefix + " " + the names + "\\n", <= 500 tokens.

    Drawn once per (seed, task), independent of the length being generated."""
    key = ("vt_icl", job.seed)
    if key in job.counter.memo:
        return job.counter.memo[key]
    hops = job.spec["num_hops"]
    rng = stream(job.seed, job.task, "icl")
    names = _names(rng, min(10, hops) + 1, 3)
    chain = _chain(names, "12345")
    c = job.counter

    def text(n):
        prompt, prefix = _prompt(
            _context(n, chain, stream(job.seed, job.task, "icl", "positions", n)), "12345", hops + 1
        )
        return prompt + prefix

    lo = len(chain)
    n = largest_fitting(lambda m: c.count_plain(text(m)), lo, lo + ICL_MAX_TOKENS, ICL_MAX_TOKENS)
    example = text(max(n, lo)) + " " + " ".join(names) + "\n"
    job.counter.memo[key] = example
    return example


def randomize_icl(example: str, hops: int, rng) -> str:
    """New names (same length) and a new value for the example's chain, as RULER's randomize_icl."""
    old = example.strip().split()[-hops - 1 :]
    new = _names(rng, len(old), len(old[0]), avoid=set(old))
    mapping = dict(zip(old, new, strict=True))
    example = re.sub(r"\b(" + "|".join(map(re.escape, old)) + r")\b", lambda m: mapping[m.group(1)], example)
    return example.replace("12345", str(rng.randrange(10000, 99999)))


class VtDraft:
    def __init__(self, job, index: int):
        s, c = job.spec, job.counter
        self.job, self.index = job, index
        rng = job.rng(index, "sample")
        hops = s["num_hops"]
        if s["num_chains"] != 1 or s["type_haystack"] != "noise":
            raise NotImplementedError("ruler_vt is RULER's 1 chain on the noise haystack")
        self.names = _names(rng, hops + 1, 5)
        self.value = str(rng.randrange(10000, 99999))  # np.random.randint(10000, 99999): upper bound excluded
        self.chain = _chain(self.names, self.value)
        example = randomize_icl(icl_example(job), hops, rng)
        self.head = example + "\n" + HEAD
        self.tail = TAIL.format(query=self.value)
        self.gen_prefix = T["answer_prefix"].format(num_v=hops + 1, query=self.value)
        self.c_head = c.count_head(c.render_head(self.head, self.gen_prefix))
        self.c_unit = c.count_plain(NOISE + "\n")
        self.c_chain = sum(c.count_many([line + "\n" for line in self.chain]))
        self.c_tail = c.count_plain(c.render_tail(self.tail, self.gen_prefix)[1:])  # the tail starts with "\n"

    def n_bounds(self) -> tuple[int, int]:
        return len(self.chain), int(self.job.budget / self.c_unit * 1.5) + 64

    def estimate(self, n: int) -> int:
        # noise lines and chain lines each end with "\n"; the last line is always noise
        return self.c_head + n * self.c_unit + self.c_chain + self.c_tail

    def build(self, n: int) -> Built:
        context = _context(n, self.chain, self.job.rng(self.index, "positions", n))
        return Built(self.head + context + self.tail, self.gen_prefix, list(self.names), self.estimate(n))
