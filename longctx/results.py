"""The RULER results JSON: the one place its schema is defined, built, validated and read.

`longctx eval` writes it; `longctx compare` reads nothing else. Layout (version 1):

    {
      "format": "longctx-ruler-results", "version": 1,
      "model": "runs/drope-64k",            # as given to `longctx eval --model`
      "label": null,                        # optional row label for `compare`
      "rope_parameters": null | {...},      # from the model's config.json (null = no RoPE)
      "backend": "longctx", "chat_template": false,
      "share_prefixes": true,               # optional: answered with shared prefixes (eval --share-prefixes)
      "samples": 50,                        # requested samples per (task, length)
      "haystack": "...",                    # the essay haystack's source and digest
      "lm_eval_version": "0.4.13", "longctx_version": "0.1.0", "created": "2026-11-23T...Z",
      "tasks": ["niah_single_1", ...], "lengths": [4096, 8192],
      "train": {"kind": "extend", "method": "drope", "steps": 180, "tokens": 11796480,
                "temperature_c": 0.41,    # optional: what longctx trained the model with (its
                "source_model": "runs/base"},  # longctx_train.json); absent for other models
      "scores": {task: {"4096": {"score": 97.5, "samples": 50, "haystack": "noise",
                                 "seconds": 12.3}  # optional: the cell's wall time, all answered in one run
                        | {"score": null, "samples": 0, "unavailable": "why"}}}
    }

A (task, length) absent from `scores` is *missing* (not run); one marked `unavailable`
could not run here (e.g. QA data offline). Neither counts as 0.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from longctx.errors import UsageError
from longctx.paths import honour_umask

FORMAT = "longctx-ruler-results"
VERSION = 1

# The 13 RULER tasks under their lm-eval names (eval_tasks.ruler.TASKS must match; a test checks).
RULER_TASKS = (
    "niah_single_1", "niah_single_2", "niah_single_3",
    "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
    "niah_multivalue", "niah_multiquery",
    "ruler_vt", "ruler_cwe", "ruler_fwe",
    "ruler_qa_squad", "ruler_qa_hotpot",
)  # fmt: skip


class ResultsError(ValueError):
    """A file that is not a valid results JSON."""


def new_results(
    *,
    model: str,
    rope_parameters: dict | None,
    tasks: list[str],
    lengths: list[int],
    backend: str,
    chat_template: bool,
    samples: int,
    haystack: str,
    lm_eval_version: str,
    label: str | None = None,
    train: dict | None = None,
) -> dict[str, Any]:
    from longctx import __version__

    extra = {} if train is None else {"train": dict(train)}
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": model,
        "label": label,
        "rope_parameters": rope_parameters,
        "backend": backend,
        "chat_template": bool(chat_template),
        "samples": int(samples),
        "haystack": haystack,
        "lm_eval_version": lm_eval_version,
        "longctx_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tasks": list(tasks),
        "lengths": sorted(int(n) for n in lengths),
        **extra,
        "scores": {},
    }


def set_score(
    results: dict,
    task: str,
    length: int,
    score: float,
    samples: int,
    haystack: str | None = None,
    seconds: float | None = None,
) -> None:
    entry = {"score": float(score), "samples": int(samples)}
    if haystack is not None:
        entry["haystack"] = haystack  # this task's own text source (noise, essays, a QA set)
    if seconds is not None:
        entry["seconds"] = round(float(seconds), 2)  # wall time of the cell, every answer generated in one go
    results["scores"].setdefault(task, {})[str(length)] = entry


NOT_FINISHED = "not finished (the evaluation stopped before this cell's last answer; rerun it to finish)"


def unfinished(entry: dict | None) -> bool:
    """An unavailable cell that a longer evaluation would have scored (`longctx eval --finished-only`)."""
    return bool(entry) and str(entry.get("unavailable", "")).startswith("not finished")


def set_unavailable(results: dict, task: str, length: int, reason: str) -> None:
    results["scores"].setdefault(task, {})[str(length)] = {"score": None, "samples": 0, "unavailable": reason}


def cell(results: dict, task: str, length: int) -> dict | None:
    """The stored entry of (task, length), or None when it is missing."""
    return results["scores"].get(task, {}).get(str(length))


def validate(obj: Any) -> dict:
    """Return `obj` if it is a version-1 results dict; raise ResultsError naming the first problem."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ResultsError(msg)

    need(isinstance(obj, dict), "top level is not a JSON object")
    need(obj.get("format") == FORMAT, f"'format' is {obj.get('format')!r}, expected {FORMAT!r}")
    need(obj.get("version") == VERSION, f"'version' is {obj.get('version')!r}; this longctx reads version {VERSION}")
    for key, types in (
        ("model", str), ("backend", str), ("haystack", str), ("lm_eval_version", str),
        ("samples", int), ("chat_template", bool), ("tasks", list), ("lengths", list), ("scores", dict),
    ):  # fmt: skip
        need(isinstance(obj.get(key), types), f"'{key}' missing or not a {types.__name__}")
    need(obj.get("label") is None or isinstance(obj["label"], str), "'label' is not a string")
    rp = obj.get("rope_parameters", "absent")
    need(rp is None or isinstance(rp, dict), "'rope_parameters' missing or not an object/null")
    need(all(isinstance(n, int) and n > 0 for n in obj["lengths"]), "'lengths' must be positive integers")
    train = obj.get("train", {})
    need(isinstance(train, dict), "'train' is not an object")
    for key in ("steps", "tokens"):
        v = train.get(key, 0)
        need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"'train.{key}' is not a whole number")
    for task, per_len in obj["scores"].items():
        need(task in RULER_TASKS, f"unknown task {task!r} in 'scores'")
        need(isinstance(per_len, dict), f"scores[{task!r}] is not an object")
        for length, entry in per_len.items():
            where = f"scores[{task!r}][{length!r}]"
            need(length.isdigit() and int(length) > 0, f"{where}: length key is not a positive integer")
            need(isinstance(entry, dict) and isinstance(entry.get("samples"), int), f"{where}: no 'samples' count")
            need(isinstance(entry.get("haystack", ""), str), f"{where}: 'haystack' is not a string")
            sec = entry.get("seconds", 0)
            need(isinstance(sec, (int, float)) and not isinstance(sec, bool) and sec >= 0,
                 f"{where}: 'seconds' {sec!r} is not a non-negative number")  # fmt: skip
            if "unavailable" in entry:
                need(entry.get("score") is None, f"{where}: unavailable but has a score")
            else:
                s = entry.get("score")
                need(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s <= 100,
                     f"{where}: score {s!r} is not a number in 0..100")  # fmt: skip
    return obj


def load(path: str | os.PathLike) -> dict:
    """Read and validate a results file; any problem is a UsageError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"results file {str(p)!r} does not exist")
    try:
        obj = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{str(p)!r} is not a results JSON ({type(e).__name__}: {e})") from None
    try:
        return validate(obj)
    except ResultsError as e:
        raise UsageError(f"{str(p)!r} is not a longctx RULER results JSON: {e}") from None


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        honour_umask(tmp)  # mkstemp makes it 0600; others on a shared cluster read results too
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(results: dict, path: str | os.PathLike) -> None:
    write_atomic(path, json.dumps(validate(results), indent=2) + "\n")


def read_train(model_dir: str | os.PathLike) -> dict | None:
    """What longctx trained a model directory with (its longctx_train.json: kind, method, steps, tokens,
    and a DRoPE temperature's c), for the results' "train"; None for a model longctx did not train."""
    p = Path(model_dir) / "longctx_train.json"
    try:
        meta = json.loads(p.read_text()) if p.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    out = {k: meta[k] for k in ("kind", "method") if isinstance(meta.get(k), str)}
    out |= {k: meta[k] for k in ("steps", "tokens") if isinstance(meta.get(k), int) and not isinstance(meta[k], bool)}
    if isinstance(meta.get("source_model"), str):  # the base an extension started from (compare --paired)
        out["source_model"] = meta["source_model"]
    temp = meta.get("temperature")
    if isinstance(temp, dict) and isinstance(temp.get("c"), (int, float)):
        out["temperature_c"] = float(temp["c"])
    return out or None


def read_rope_parameters(model_dir: str | os.PathLike) -> dict | None:
    """The model's RoPE as transformers >= 5 spells it (`rope_parameters`; null = no RoPE).

    Older configs carry `rope_theta` + `rope_scaling`; those are folded into the same shape.
    """
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    if "rope_parameters" in cfg:
        return _running_part(cfg.get("model_type"), cfg["rope_parameters"])
    if "rope_theta" not in cfg and "rope_scaling" not in cfg:
        return None
    rp = dict(cfg.get("rope_scaling") or {"rope_type": "default"})
    if "type" in rp and "rope_type" not in rp:
        rp["rope_type"] = rp.pop("type")
    if "rope_theta" in cfg:
        rp["rope_theta"] = cfg["rope_theta"]
    return rp


_LAYER_TYPES = ("full_attention", "sliding_attention", "linear_attention")


def _running_part(model_type, rp):
    """The part of `rope_parameters` the architecture runs (as longctx.model.config.rope_parameters_for
    reads it): Olmo 3 its per-layer-type entries, not the flat keys a flat dict leaves beside them;
    Olmo Hybrid the flat keys, none of them meaning no RoPE."""
    if not isinstance(rp, dict):
        return rp
    nested = {k: v for k, v in rp.items() if k in _LAYER_TYPES}
    if not nested:
        return rp
    flat = {k: v for k, v in rp.items() if k not in _LAYER_TYPES}
    if model_type == "olmo3":
        return nested
    if model_type == "olmo_hybrid":
        return flat or {"rope_type": "default", "rope_theta": None}
    return rp


def per_layer_type(rope_parameters: dict | None) -> dict | None:
    """The entries of RoPE given per layer type ({"full_attention": {...}, "sliding_attention": {...}}, an entry
    None for no RoPE), else None (one RoPE for every layer, or none)."""
    rp = rope_parameters
    if rp and "rope_type" not in rp and all(isinstance(v, dict) or v is None for v in rp.values()):
        return rp
    return None


_METHOD_OF_ROPE_TYPE = {"yarn": "yarn", "linear": "pi", "dynamic": "ntk", "default": "default"}


def rope_method(rope_parameters: dict | None) -> str:
    """Name the context method a config implies: no RoPE -> drope, yarn, linear -> pi, dynamic -> ntk.

    No RoPE is `null`, or `rope_theta: null` -- the spelling transformers (5.23) needs to build an
    Olmo Hybrid without rotary embeddings; it reads `rope_parameters: null` as default RoPE -- or
    rope_methods.UNROTATED (Olmo 3, whose transformers class always rotates).
    """
    from rope_methods import is_unrotated

    rp = rope_parameters
    if rp is None or ("rope_theta" in rp and rp["rope_theta"] is None) or is_unrotated(rp):
        return "drope"
    # Per-layer-type RoPE (e.g. {"full_attention": {...}, "sliding_attention": {...}}): the
    # full-attention layers are the ones context methods change.
    if (nested := per_layer_type(rp)) is not None:
        inner = nested.get("full_attention", next(iter(nested.values())))
        return rope_method(inner)
    kind = rp.get("rope_type", rp.get("type", "default"))
    return _METHOD_OF_ROPE_TYPE.get(kind, kind)


def run_label(results: dict) -> str:
    """A table row / legend name: the stored label, else `<model dir name> (<method>)`."""
    if results.get("label"):
        return results["label"]
    name = Path(results["model"].rstrip("/")).name or results["model"]
    return f"{name} ({rope_method(results['rope_parameters'])})"


def parse_tasks(text: str) -> list[str]:
    """`--tasks` of eval and compare: 'all', or comma-separated names (the 'ruler_' prefix may be left out)."""
    if text.strip().lower() in ("all", "ruler"):
        return list(RULER_TASKS)
    tasks = []
    for name in (t.strip() for t in text.split(",") if t.strip()):
        full = name if name in RULER_TASKS else f"ruler_{name}"
        if full not in RULER_TASKS:
            raise UsageError(f"unknown task {name!r}; choose from: all, {', '.join(RULER_TASKS)}")
        if full not in tasks:
            tasks.append(full)
    if not tasks:
        raise UsageError(f"no tasks in {text!r}; give 'all' or names from: {', '.join(RULER_TASKS)}")
    return tasks
