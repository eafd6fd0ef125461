"""Crash-safe evaluation: every finished request is appended to a JSONL journal at once.

lm-eval's own `CachingLM` (`use_cache=`) keeps responses in a sqlite file per rank through
`SqliteDict(autocommit=True)`, whose commits run on a background thread, so a crash or a
Ctrl-C can drop the last batch of writes, and it has no notion of a finished (task, length).
The journal here is a plain append-only JSONL next to the output, fsynced per line:

    {"kind": "header", "fingerprint": {...}}              # model/backend the answers belong to
    {"kind": "response", "key": <request hash>, "task": ..., "length": ..., "response": ...}
    {"kind": "cell", "task": ..., "length": ..., "limit": ..., "entry": {...}}   # a finished score

`ResumableLM` wraps any lm-eval `LM`: requests already in the journal are answered from it,
the rest go to the wrapped model, whose per-request cache hook (HFLM and vLLM call it as each
answer is produced) journals them one by one, so an interruption loses at most the batch in flight.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM, CacheHook, hash_args

from longctx.errors import UsageError

_MISSING = object()


def read_records(path: Path) -> tuple[list[dict], int]:
    """A journal's records, header first, and the byte length of its complete lines: a crash mid-line
    leaves a torn last line, which is left out. UsageError when the file is not a journal."""
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    try:
        lines = [json.loads(s) for s in complete.decode().splitlines() if s.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{str(path)!r} is not a longctx answer journal ({e}); delete it") from None
    if lines and (not isinstance(lines[0], dict) or lines[0].get("kind") != "header"):
        raise UsageError(f"{str(path)!r} is not a longctx answer journal (no header); delete it")
    return lines, len(complete)


class Journal:
    def __init__(self, path: str | os.PathLike, fingerprint: dict, writable: bool = True):
        """`writable=False`: read the file and keep what is added in memory only (the processes of a
        data-parallel evaluation other than rank 0, which alone writes)."""
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.writable = writable
        self.responses: dict[str, Any] = {}
        self.cells: dict[tuple[str, int, int], dict] = {}
        self._file = None
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        lines, complete = read_records(self.path)
        if lines and lines[0].get("fingerprint") != self.fingerprint:
            raise UsageError(
                f"{str(self.path)!r} holds answers of another run ({lines[0].get('fingerprint')}); "
                "delete it or choose another --out"
            )
        for rec in lines[1:]:
            if rec["kind"] == "response":
                self.responses[rec["key"]] = rec["response"]
            elif rec["kind"] == "cell":
                self.cells[(rec["task"], rec["length"], rec["limit"])] = rec["entry"]
        if self.writable and complete != self.path.stat().st_size:  # the torn last line goes
            with open(self.path, "r+b") as f:
                f.truncate(complete)

    def _append(self, rec: dict) -> None:
        if not self.writable:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a")
            if fresh:
                self._write({"kind": "header", "fingerprint": self.fingerprint})
        self._write(rec)

    def _write(self, rec: dict) -> None:
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def add_response(self, key: str, response: Any, **info: Any) -> None:
        self.responses[key] = response
        self._append({"kind": "response", "key": key, **info, "response": response})

    def cell(self, task: str, length: int, limit: int) -> dict | None:
        return self.cells.get((task, length, limit))

    def add_cell(self, task: str, length: int, limit: int, entry: dict) -> None:
        self.cells[(task, length, limit)] = entry
        self._append({"kind": "cell", "task": task, "length": length, "limit": limit, "entry": entry})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _JournalHook(CacheHook):
    """Installed as the wrapped model's cache hook: journals each answer the moment it exists."""

    def __init__(self, owner: ResumableLM):
        self.dbdict = None
        self.owner = owner

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        self.owner._record(attr, req, res)


class ResumableLM(LM):
    """An lm-eval LM answering journaled requests from the journal and the rest from `lm`."""

    def __init__(self, lm: LM, journal: Journal, chunk: int | None = None, ranks=None):
        """`chunk`: hand the model at most this many requests per call, for backends that answer
        a whole call at once (vLLM), so an interruption loses at most one chunk.
        `ranks` (longctx.evaluate.ranks.Ranks): the processes of a data-parallel evaluation; each answers
        its share of the requests and all exchange their answers (the journal is written by rank 0)."""
        super().__init__()
        self.lm = lm
        self.journal = journal
        self.chunk = chunk
        self.ranks = ranks
        self.tag: dict[str, Any] = {}  # task/length of the current cell, stored with each answer
        self.computed = 0  # requests sent to the wrapped model (tests and progress use it)
        self.reused = 0
        self._pending: set[str] = set()  # hashes of the requests the model is answering now
        self._pending_by_context: dict[str, list[str]] = {}
        lm.set_cache_hook(_JournalHook(self))

    # --- the three request types
    def generate_until(self, requests, *args, **kwargs):
        return self._answer("generate_until", requests, args, kwargs)

    def loglikelihood(self, requests, *args, **kwargs):
        return self._answer("loglikelihood", requests, args, kwargs)

    def loglikelihood_rolling(self, requests, *args, **kwargs):
        return self._answer("loglikelihood_rolling", requests, args, kwargs)

    def _answer(self, attr: str, requests: list, args: tuple, kwargs: dict) -> list:
        keys = [hash_args(attr, r.args) for r in requests]
        out = [self.journal.responses.get(k, _MISSING) for k in keys]
        todo = [i for i, o in enumerate(out) if o is _MISSING]
        self.reused += len(requests) - len(todo)
        if todo and self.ranks is not None:
            self._answer_shared(attr, requests, keys, out, todo, args, kwargs)
        elif todo:
            self._pending = {keys[i] for i in todo}
            self._pending_by_context = {}
            for i in todo:
                self._pending_by_context.setdefault(_context(requests[i].args), []).append(keys[i])
            step = self.chunk or len(todo)
            for start in range(0, len(todo), step):
                part = todo[start : start + step]
                self.computed += len(part)
                fresh = getattr(self.lm, attr)([requests[i] for i in part], *args, **kwargs)
                for i, res in zip(part, fresh, strict=True):
                    out[i] = res
                    if keys[i] not in self.journal.responses:  # a model that never calls the hook
                        self.journal.add_response(keys[i], _jsonable(res), **self.tag)
            self._pending, self._pending_by_context = set(), {}
        # JSON turns loglikelihood tuples into lists; lm-eval unpacks either, but keep its types.
        return [tuple(o) if isinstance(o, list) else o for o in out]

    def _answer_shared(self, attr, requests, keys, out, todo, args, kwargs) -> None:
        """Data parallel: rounds of ranks.world x ROUND requests (or chunk), each process answering its
        share; after each round every process has every answer and rank 0 journals them."""
        from longctx.evaluate.ranks import ROUND

        step = self.ranks.world * (self.chunk or ROUND)
        for start in range(0, len(todo), step):
            mine = self.ranks.share(todo[start : start + step])
            fresh = getattr(self.lm, attr)([requests[i] for i in mine], *args, **kwargs) if mine else []
            self.computed += len(mine)
            answered = [(i, _jsonable(res)) for i, res in zip(mine, fresh, strict=True)]
            for i, res in sorted(pair for part in self.ranks.gather(answered) for pair in part):
                out[i] = res
                self.journal.add_response(keys[i], res, **self.tag)

    def _record(self, attr: str, req: Any, res: Any) -> None:
        if self.ranks is not None:  # answers are journaled once exchanged (_answer_shared)
            return
        try:
            key = hash_args(attr, req)
        except TypeError:
            key = None
        if key not in self._pending:
            key = None
            if attr == "generate_until":
                # Some backends hand the hook normalised generation kwargs: match on the prompt
                # (a loglikelihood prompt is shared by several continuations, so never there).
                keys = self._pending_by_context.get(_context(req), [])
                key = next((k for k in keys if k not in self.journal.responses), None)
        if key is not None and key not in self.journal.responses:
            self.journal.add_response(key, _jsonable(res), **self.tag)

    # --- everything else is the wrapped model's
    def __getattr__(self, name: str) -> Any:
        if name == "lm":
            raise AttributeError(name)
        return getattr(self.lm, name)

    @property
    def rank(self) -> int:
        return self.lm.rank

    @property
    def world_size(self) -> int:
        return self.lm.world_size

    @property
    def device(self):
        return self.lm.device

    @property
    def tokenizer_name(self) -> str:
        return self.lm.tokenizer_name

    def all_gather(self, tensor):
        return self.lm.all_gather(tensor)

    def gather_object(self, obj, dst=0):
        return self.lm.gather_object(obj, dst=dst)

    def barrier(self) -> None:
        return self.lm.barrier()

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        return self.lm.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    def chat_template(self, chat_template=False):
        return self.lm.chat_template(chat_template)


def _context(args: Any) -> str:
    return json.dumps(list(args)[:1])


def _jsonable(res: Any) -> Any:
    return list(res) if isinstance(res, tuple) else res


class Unanswered(Exception):
    """A request the journal has no answer for, under `finished_only`."""


def journal_only_lm():
    """`finished_only`'s model: every answer comes from the journal (ResumableLM), and a request it
    lacks ends the cell as not finished, so the cells whose answers are all there are scored as usual."""

    class JournalOnly(LM):
        def generate_until(self, requests, *args, **kwargs):
            raise Unanswered(len(requests))

        loglikelihood = loglikelihood_rolling = generate_until

    return JournalOnly()
