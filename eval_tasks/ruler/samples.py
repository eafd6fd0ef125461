"""`generate(task, max_seq_length, num_samples, tokenizer, seed=42, **opts)`: RULER samples sized
to a model's tokenizer, deterministic per (task, length, index, tokenizer, seed, sources)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from . import cache as sample_cache
from .errors import LengthTooShort
from .haystack import load_haystack
from .rng import stream
from .sizing import Mode, fit
from .spec import TASK_SPECS, TASKS, max_gen_toks
from .tokens import TokenCounter

log = logging.getLogger(__name__)

GENERATOR_VERSION = 4  # bump when a change alters generated samples (invalidates the disk cache)
OPTIONS = (
    "chat_template",
    "system_instruction",
    "haystack",
    "haystack_dir",
    "qa_cache_dir",
    "cache_dir",
    "exact",
    "verify_every",
)


@dataclass
class Job:
    """Everything one (task, length) generation needs; drafts read it."""

    task: str
    max_seq_length: int
    seed: int
    counter: TokenCounter
    opts: dict
    spec: dict = field(init=False)
    max_gen_toks: int = field(init=False)
    budget: int = field(init=False)
    mode: Mode = field(init=False)
    memo: dict = field(default_factory=dict)  # per-job caches a draft builds once

    def __post_init__(self):
        self.spec = TASK_SPECS[self.task]
        self.max_gen_toks = max_gen_toks(self.task)
        self.budget = self.max_seq_length - self.max_gen_toks
        exact = self.opts.get("exact", "auto")
        if exact not in ("auto", "full"):
            raise ValueError(f"exact={exact!r}; accepted: auto, full")
        # slow tokenizers give no offsets, so piece sums are estimates: check every prompt in full
        full = exact == "full" or self.counter.backend is None
        self.mode = Mode(full=full, verify_every=max(1, int(self.opts.get("verify_every", 25))))

    def stream(self, index, *names) -> tuple:
        """The parts naming a per-sample random stream."""
        return (self.seed, self.task, self.max_seq_length, index, *names)

    def rng(self, index, *names):
        return stream(*self.stream(index, *names))

    def haystack(self):
        return load_haystack(self.opts.get("haystack") or "auto", self.opts.get("haystack_dir"))


def _draft_class(kind: str):
    from . import cwe, fwe, niah, qa, vt

    return {
        "niah": niah.NiahDraft,
        "variable_tracking": vt.VtDraft,
        "common_words_extraction": cwe.CweDraft,
        "freq_words_extraction": fwe.FweDraft,
        "qa": qa.QaDraft,
    }[kind]


def sources(task: str, opts: dict) -> dict:
    """The data sources a task's samples come from (loads them; raises DataUnavailable)."""
    kind = TASK_SPECS[task]["kind"]
    spec = TASK_SPECS[task]
    if kind == "niah" and spec["type_haystack"] == "essay":
        h = load_haystack(opts.get("haystack") or "auto", opts.get("haystack_dir"))
        return {"haystack": h.source, "haystack_digest": h.digest}
    if kind == "qa":
        from .qa_data import load_qa

        data = load_qa(spec["dataset"], opts.get("qa_cache_dir"))
        return {"haystack": data.source, "qa_source": data.source, "qa_digest": data.digest}
    return {"haystack": {"niah": spec.get("type_haystack"), "variable_tracking": "noise"}.get(kind, "synthetic")}


def generate(task: str, max_seq_length: int, num_samples: int, tokenizer, seed: int = 42, **opts) -> list[dict]:
    """RULER samples for `task` at `max_seq_length` tokens.

    Each sample: `input` (prompt without answer prefix), `gen_prefix` (the answer prefix the
    model continues from), `outputs` (references), `max_gen_toks`, `length` (prompt tokens,
    chat template and answer prefix included, + max_gen_toks; always <= max_seq_length),
    `units` (haystack size: noise lines, distractor needles, essay words, list words or
    documents; one more would not fit),
    `max_length`, `index`, `task`, `seed`, `haystack` and `qa_source`.

    opts: chat_template (bool, or a callable messages -> str as lm-eval's model applies it),
    system_instruction (lm-eval's --system_instruction, sized in),
    haystack ("auto" | "paul_graham" | "bundled"), haystack_dir (folder of .txt files),
    qa_cache_dir, cache_dir (None: default, False: no disk cache), exact ("auto" | "full"),
    verify_every. Raises DataUnavailable when the task's data cannot be had.
    """
    if task not in TASKS:
        raise ValueError(f"unknown RULER task {task!r}; accepted: {', '.join(TASKS)}")
    unknown = set(opts) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; accepted: {', '.join(OPTIONS)}")
    if isinstance(tokenizer, str):
        tokenizer = _load_tokenizer(tokenizer)
    counter = counter_for(tokenizer, opts.get("chat_template", False), opts.get("system_instruction"))
    src = sources(task, opts)
    if max_seq_length - max_gen_toks(task) <= 0:
        raise LengthTooShort(
            f"max_seq_length={max_seq_length} leaves no room for {max_gen_toks(task)} generated tokens"
        )
    key = {
        "version": GENERATOR_VERSION,
        "task": task,
        "max_seq_length": int(max_seq_length),
        "seed": int(seed),
        "tokenizer": counter.fingerprint(),
        "chat_template": bool(opts.get("chat_template", False)),
        "system_instruction": opts.get("system_instruction") or None,
        "sources": src,
    }
    cached = sample_cache.load(key, num_samples, opts.get("cache_dir"))
    if cached is not None:
        return cached
    job = Job(task, int(max_seq_length), int(seed), counter, opts)
    draft_cls = _draft_class(job.spec["kind"])
    out = []
    for index in range(num_samples):
        draft = draft_cls(job, index)
        try:
            built, prompt_tokens, units = fit(draft, counter, job.budget, job.mode, index, f"{task}@{max_seq_length}")
        except LengthTooShort as err:
            raise LengthTooShort(f"{task} does not fit in {max_seq_length} tokens with this tokenizer: {err}") from None
        out.append(
            {
                "index": index,
                "task": task,
                "max_length": int(max_seq_length),
                "input": built.input,
                "gen_prefix": built.gen_prefix,
                "outputs": list(built.outputs),
                "max_gen_toks": job.max_gen_toks,
                "length": prompt_tokens + job.max_gen_toks,
                "units": units,
                "seed": int(seed),
                "chat_template": bool(opts.get("chat_template", False)),
                "haystack": src.get("haystack", ""),
                "qa_source": src.get("qa_source", ""),
            }
        )
    sample_cache.save(key, out, opts.get("cache_dir"))
    return out


_COUNTERS: dict[tuple, TokenCounter] = {}


def counter_for(tokenizer, chat_template=False, system_instruction=None) -> TokenCounter:
    """One counter (and its piece-count cache) per tokenizer and prompt rendering."""
    key = (id(tokenizer), chat_template if callable(chat_template) else bool(chat_template), system_instruction or None)
    c = _COUNTERS.get(key)
    if c is None or c.tok is not tokenizer:
        if len(_COUNTERS) > 8:
            _COUNTERS.clear()
        c = _COUNTERS[key] = TokenCounter(tokenizer, chat_template, system_instruction)
    return c


@functools.lru_cache(maxsize=4)
def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, trust_remote_code=True)
