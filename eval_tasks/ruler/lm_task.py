"""lm-eval glue: the task class the YAMLs name, per-sample scoring and per-length metrics.

Metadata (`--metadata` JSON, merged by lm-eval with `--model_args`) read here:
  max_seq_lengths  list of lengths (default [4096]); each is a metric ("4096", "8192", ...)
  tokenizer | pretrained | model   tokenizer to size prompts with (first one given)
  num_samples (500), seed (42), haystack, haystack_dir, qa_cache_dir, cache_dir, exact,
  chat_template (bool; default: whether `--apply_chat_template` is on the command line),
  system_instruction (default: `--system_instruction` from the command line)
  max_length | max_model_len   the model's context as lm-eval's model uses it (`--model_args` are
                   merged in); without one, the model folder's config.json (`pretrained`), read
                   as lm-eval's HF model reads it

A prompt longer than the model's max length would be left-truncated by lm-eval and still scored;
such a run is refused before any request is built (see `check_fits`).

Differences from a plain ConfigurableTask:
  * samples are generated when the task is built (and cached on disk), sized with the chat
    template when lm-eval applies one; if the request-building step finds the chat setting
    differs from the one guessed, the samples are regenerated to match;
  * `--limit N` takes the first N samples of every length, not of the whole task (and, given on
    the command line, caps how many are generated);
  * a task whose data cannot be had (SQuAD/HotpotQA offline, no cache) is skipped with a
    warning: it gets no requests and no metrics, and the `ruler` group averages the tasks that
    ran (lm-eval lists the missing ones in a warning).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from collections import Counter

import datasets
from lm_eval.api.task import ConfigurableTask

from .errors import DataUnavailable
from .samples import OPTIONS, generate
from .scoring import sample_score

# under lm_eval's logger so warnings print in its format next to its own
log = logging.getLogger("lm_eval.longctx_ruler")

DEFAULT_LENGTHS = (4096,)
DEFAULT_SAMPLES = 500
# Lengths with a declared metric (and a `ruler` group aggregate); others still get a per-task
# metric, averaged by lm-eval's default.
METRIC_LENGTHS = tuple(2**k for k in range(9, 22))


METRIC_LIST = [{"metric": str(n), "aggregation": "mean", "higher_is_better": True} for n in METRIC_LENGTHS]
GROUP_METRICS = [{"metric": str(n), "weight_by_size": False} for n in METRIC_LENGTHS]


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """The sample's score (0-100) under its own length's metric only."""
    return {str(doc["max_length"]): sample_score(doc["task"], results[0], doc["outputs"])}


def _argv_flag(name: str) -> str | None:
    """Value of a `lm_eval` command-line flag ('' when present without a value), else None."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == name:
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            return "" if nxt.startswith("--") else nxt
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _lengths(meta: dict) -> list[int]:
    raw = meta.get("max_seq_lengths", DEFAULT_LENGTHS)
    if isinstance(raw, (int, str)):
        raw = [raw] if isinstance(raw, int) else [x for x in str(raw).replace(";", ",").split(",") if x.strip()]
    return [int(x) for x in raw]


def model_max_length(meta: dict) -> tuple[int, str] | None:
    """The context lm-eval's model will cut prompts to, and where it comes from: `max_length`
    (HF models) or `max_model_len` (vLLM) in the model args, else the model folder's config.json
    read as lm-eval's HFLM reads it (text_config first; n_positions, max_position_embeddings, n_ctx).
    None when neither is known (a Hub id, a config without a length)."""
    for key in ("max_length", "max_model_len"):
        if meta.get(key) not in (None, ""):
            return int(meta[key]), f"{key}={meta[key]}"
    path = meta.get("pretrained")
    if not isinstance(path, str) or not os.path.isfile(os.path.join(path, "config.json")):
        return None
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    config = config.get("text_config") or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if config.get(attr) is not None:
            return int(config[attr]), f"{attr}={config[attr]} in {path}/config.json"
    return None


def check_fits(task: str, docs, meta: dict) -> None:
    """Refuse samples longer than the model's max length. A sample's `length` is its prompt (template
    and answer prefix included) plus the tokens it may generate; lm-eval keeps at most max_length minus
    those of the prompt and drops the rest from the left: the haystack's start, in NIAH the task
    description itself, yet it reports a score."""
    known = model_max_length(meta)
    if known is None or not len(docs):
        return
    limit, source = known
    rows = docs if isinstance(docs, list) else docs.select_columns(["length", "max_gen_toks", "max_length"]).to_list()
    longest = max(rows, key=lambda d: d["length"])
    if longest["length"] <= limit:
        return
    need = max(d["max_length"] for d in rows)
    raise ValueError(
        f"{task}: a prompt of {longest['length'] - longest['max_gen_toks']} tokens + {longest['max_gen_toks']} to "
        f"generate (RULER length {longest['max_length']}) does not fit the model's max length {limit} ({source}); "
        f"lm-eval would left-truncate it and still report a score. Pass --model_args ...,max_length={need + 256} "
        f"(vLLM: max_model_len), or leave out the lengths above {limit}."
    )


class _NoInstances(list):
    """The requests of a skipped task: none, but lm-eval's evaluator reads
    `task.instances[0].filtered_resps` to learn the filters; an empty filter set makes it
    score nothing."""

    class _Stub:
        filtered_resps: dict = {}

    def __getitem__(self, i):
        if not len(self) and i == 0:
            return self._Stub()
        return super().__getitem__(i)


class _ModelTemplate:
    """lm-eval's model.apply_chat_template, as the callable TokenCounter renders with."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, messages) -> str:
        return self.fn(messages, add_generation_prompt=False)

    def __eq__(self, other):
        return isinstance(other, _ModelTemplate) and other.fn == self.fn

    def __hash__(self):
        return hash(self.fn)


class RulerTask(ConfigurableTask):
    def __init__(self, config: dict | None = None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        self.unavailable: str | None = None
        self._limit: int | None = None
        self._chat = None
        self._system: str | None = None
        super().__init__(config=config, **kwargs)

    # ---- data
    def _meta(self) -> dict:
        return dict(self.config.metadata or {})

    def _tokenizer_name(self, meta: dict) -> str:
        for key in ("tokenizer", "pretrained", "model"):
            if isinstance(meta.get(key), str) and meta[key]:
                return meta[key]
        raise ValueError(
            f"{self.config.task}: RULER sizes prompts with the model's tokenizer; pass one with "
            "--model_args pretrained=PATH (or tokenizer=NAME)"
        )

    def _generate(self) -> list[dict]:
        meta = self._meta()
        tokenizer = _tokenizer(self._tokenizer_name(meta), bool(meta.get("trust_remote_code", False)))
        num = int(meta.get("num_samples", DEFAULT_SAMPLES))
        limit = _argv_flag("--limit")
        if limit and limit.isdigit() and int(limit) >= 1:
            num = min(num, int(limit))  # sample i never depends on how many are drawn
        opts = {k: meta[k] for k in OPTIONS if k in meta and k not in ("chat_template", "system_instruction")}
        seed = int(meta.get("seed", 42))
        docs = []
        for length in _lengths(meta):
            log.info("%s: generating %d samples at %d tokens", self.config.task, num, length)
            docs += generate(
                self.config.task,
                length,
                num,
                tokenizer,
                seed=seed,
                chat_template=self._chat,
                system_instruction=self._system,
                **opts,
            )
        return docs

    def download(self, dataset_kwargs=None, **kwargs) -> None:
        # How lm-eval will render prompts is only known when requests are built; guess it from
        # the metadata or the lm_eval command line now, and regenerate then if the guess was wrong.
        meta = self._meta()
        chat = meta.get("chat_template", meta.get("apply_chat_template"))
        if chat is None:
            chat = _argv_flag("--apply_chat_template") is not None
        self._chat = bool(chat)
        self._system = meta.get("system_instruction") or _argv_flag("--system_instruction") or None
        try:
            docs = self._generate()
        except DataUnavailable as err:
            self.unavailable = str(err)
            log.warning("%s unavailable, skipped (no score): %s", self.config.task, err)
            docs = [_placeholder(self.config.task)]
        self.dataset = {"test": datasets.Dataset.from_list(docs)}

    # ---- requests
    def build_all_requests(
        self, *, limit=None, apply_chat_template=False, chat_template=None, system_instruction=None, **kwargs
    ):
        if self.unavailable is not None:
            log.warning("%s unavailable, skipped (no score): %s", self.config.task, self.unavailable)
            self._instances = _NoInstances()
            return
        chat = bool(apply_chat_template)
        if chat and chat_template is not None and not self._same_template(chat_template):
            chat = _ModelTemplate(chat_template)  # the model's own template differs from the tokenizer's
        if (chat, system_instruction or None) != (self._chat, self._system):
            log.warning(
                "%s: regenerating samples for the prompt format lm-eval applies "
                "(chat template %s, system instruction %s)",
                self.config.task,
                "on" if chat else "off",
                "set" if system_instruction else "none",
            )
            self._chat, self._system = chat, system_instruction or None
            self.dataset = {"test": datasets.Dataset.from_list(self._generate())}
            self.task_docs = self.eval_docs
        check_fits(self.config.task, self.eval_docs, self._meta())
        self._limit = int(limit) if limit else None
        return super().build_all_requests(
            limit=None,
            apply_chat_template=apply_chat_template,
            chat_template=chat_template,
            system_instruction=system_instruction,
            **kwargs,
        )

    def _same_template(self, chat_template) -> bool:
        meta = self._meta()
        tok = _tokenizer(self._tokenizer_name(meta), bool(meta.get("trust_remote_code", False)))
        probe = [{"role": "user", "content": "Which?"}, {"role": "assistant", "content": " Answer:"}]
        try:
            ours = tok.apply_chat_template(
                probe, tokenize=False, add_generation_prompt=False, continue_final_message=True
            )
        except Exception:
            return False
        return ours == chat_template(probe, add_generation_prompt=False)

    def apply_filters(self):
        if self.unavailable is None:
            return super().apply_filters()

    def doc_iterator(self, *, rank: int = 0, limit=None, world_size: int = 1, samples=None):
        """`limit` counts samples per length (lm-eval counts per task)."""
        limit = self._limit if limit is None else int(limit)
        if samples or not limit:
            return super().doc_iterator(
                rank=rank, limit=limit if samples else None, world_size=world_size, samples=samples
            )
        seen: Counter = Counter()
        keep = []
        for i, length in enumerate(self.eval_docs["max_length"]):
            seen[length] += 1
            if seen[length] <= limit:
                keep.append(i)
        docs = self.eval_docs
        return itertools.islice(((i, docs[i]) for i in keep), rank, None, world_size)


def _placeholder(task: str) -> dict:
    return {
        "index": 0,
        "task": task,
        "max_length": 0,
        "input": "",
        "gen_prefix": "",
        "outputs": [""],
        "max_gen_toks": 0,
        "length": 0,
        "units": 0,
        "seed": 0,
        "chat_template": False,
        "haystack": "",
        "qa_source": "",
    }


_TOKENIZERS: dict = {}


def _tokenizer(name: str, trust_remote_code: bool):
    if name not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[name] = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    return _TOKENIZERS[name]
