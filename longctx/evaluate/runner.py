"""Run RULER through lm-eval's Python API, one (task, length) at a time, resumably.

Each cell is one `lm_eval.simple_evaluate` call with a TaskManager that includes
`eval_tasks.TASKS_DIR` and metadata `max_seq_lengths=[length]`, `limit=samples`. The model is
built once and wrapped in `ResumableLM`, so answers survive a crash or Ctrl-C in the journal
`<out>.partial.jsonl`; a rerun with the same --out skips finished cells and finished samples.
The results JSON is written atomically at the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx import results as R
from longctx.evaluate.lm_eval_setup import env_info_once, log_to_current_stderr, quiet_git_hash
from longctx.evaluate.pace import Pace, duration
from longctx.evaluate.ranks import one_process_to_lm_eval
from longctx.evaluate.resume import Journal, ResumableLM, Unanswered, journal_only_lm
from longctx.lengths import format_length

BACKENDS = ("longctx", "hf", "vllm")
HAYSTACKS = ("auto", "paul_graham", "bundled")  # eval_tasks.ruler's essay haystack choices
# lm-eval left-truncates prompts longer than the model's max_length. RULER sizes prompt plus
# answer to fit the target length, so the cap is the largest length plus a margin that absorbs
# a chat template's few extra tokens rather than cutting off the start of the task.
CONTEXT_MARGIN = 256
# vLLM answers a whole call at once, so requests go to it in chunks (an interruption loses one): of about
# VLLM_CHUNK_TOKENS tokens, so that short prompts still fill its batches, and at least VLLM_CHUNK requests.
VLLM_CHUNK = 32
VLLM_CHUNK_TOKENS = 1 << 20


def vllm_chunk(length: int) -> int:
    """Requests per vLLM call at `length` tokens: 256 at 4k, 64 at 16k, 32 from 32k on."""
    return max(VLLM_CHUNK, VLLM_CHUNK_TOKENS // length)


@dataclass
class EvalSpec:
    model: str
    lengths: list[int]
    tasks: list[str]
    samples: int
    out: Path
    backend: str = "longctx"
    chat_template: bool = False
    batch_size: int | str | None = None  # None: "auto" for longctx (sized per length) and vllm, 1 for hf
    device: str | None = None
    dtype: str = "auto"
    label: str | None = None
    haystack: str = "auto"
    haystack_dir: str | None = None
    seed: int = 42
    temperature_per_length: bool = False  # a DRoPE temperature's beta set for each length (PerLengthTemperature)
    finished_only: bool = False  # results of the cells the journal finished; no model is loaded
    share_prefixes: bool = False  # longctx: prefill a batch's shared prefixes once (longctx.model.prefix); vllm: its
    # prefix cache (enable_prefix_caching)

    def data_opts(self) -> dict:
        """The eval_tasks.ruler options that choose the samples' text sources."""
        opts = {"haystack": self.haystack}
        if self.haystack_dir:
            opts["haystack_dir"] = str(Path(self.haystack_dir).resolve())
        return opts


def journal_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def _weights_stamp(model_dir: Path) -> str:
    """Names, sizes and mtimes of the weight files: a model retrained into the same folder differs."""
    files = sorted(p for ext in ("*.safetensors", "*.bin", "*.pt") for p in model_dir.glob(ext))
    st = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(repr(st).encode()).hexdigest()[:16]


def fingerprint(spec: EvalSpec) -> dict:
    """What the journaled answers depend on; a journal of another run is refused, not reused."""
    return {
        "model": str(Path(spec.model).resolve()),
        "weights": _weights_stamp(Path(spec.model)),
        "backend": spec.backend,
        "chat_template": spec.chat_template,
        "dtype": spec.dtype,
        "seed": spec.seed,
        **spec.data_opts(),
        **({"temperature_per_length": True} if spec.temperature_per_length else {}),
        # shared prefixes (a shared prefill, vLLM's prefix cache) may change bf16 answers at near-ties
        **({"share_prefixes": True} if spec.share_prefixes else {}),
    }


def journal_fingerprint(spec: EvalSpec) -> dict:
    """The fingerprint the answer journal must carry: spec's, or with `finished_only` the journal's own when
    it differs from spec's only in the model's path and weights (those of an evaluation cut short may be
    gone or moved); UsageError naming the settings that differ, or when there is no journal."""
    from longctx.errors import UsageError
    from longctx.evaluate.resume import read_records

    ours = fingerprint(spec)
    if not spec.finished_only:
        return ours
    path = journal_path(spec.out)
    lines = read_records(path)[0] if path.is_file() else []
    if not lines:
        raise UsageError(f"--finished-only: no answer journal at {str(path)!r} (the one `longctx eval --out` keeps)")
    theirs = lines[0]["fingerprint"]
    keys = dict.fromkeys([*theirs, *ours])
    differ = [k for k in keys if k not in ("model", "weights") and theirs.get(k) != ours.get(k)]
    if differ:
        said = ", ".join(f"{k} {theirs.get(k)!r} (here {ours.get(k)!r})" for k in differ)
        raise UsageError(f"--finished-only: {str(path)!r} was made with other settings: {said}; give its own")
    return theirs


def temperature_record(spec: EvalSpec) -> dict:
    """The DRoPE temperature folded into spec.model (its longctx_train.json), for temperature_per_length."""
    from longctx.errors import UsageError

    p = Path(spec.model) / "longctx_train.json"
    try:
        record = json.loads(p.read_text()).get("temperature") if p.is_file() else None
    except (OSError, ValueError, AttributeError):
        record = None
    if not isinstance(record, dict) or not all(k in record for k in ("c", "beta", "base_len", "layers")):
        raise UsageError(
            f"--temperature-per-length: {spec.model} has no DRoPE temperature record in longctx_train.json "
            "(give a model from `longctx extend --set extend.rope.temperature=...` or `longctx temperature`)"
        )
    return record


def torch_model(lm):
    """The torch model inside an lm-eval LM: ours (`_model`) or HFLM's (`model`)."""
    model = getattr(lm, "_model", None) or getattr(lm, "model", None)
    if model is None or not hasattr(model, "parameters"):
        raise TypeError(f"{type(lm).__name__}: no torch model to set a temperature on")
    return model


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def no_flashinfer_sampler() -> None:
    """vLLM's sampler imports FlashInfer on CUDA unless VLLM_USE_FLASHINFER_SAMPLER=0 (vllm 0.26
    TopKTopPSampler); the offline install (bench/vllm_peer) leaves FlashInfer out, and greedy decoding
    never uses that sampler, so turn it off where FlashInfer is absent."""
    import importlib.util

    if importlib.util.find_spec("flashinfer") is None:
        os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")


def build_lm(spec: EvalSpec):
    """The lm-eval model of `spec.backend` (`longctx` registers itself on import)."""
    from lm_eval.api.registry import get_model

    max_len = max(spec.lengths) + CONTEXT_MARGIN
    # Absolute: HFLM asks the Hub about a `pretrained` that looks like a repo id (`runs/x` does).
    model = str(Path(spec.model).resolve())
    if spec.backend == "vllm":
        # vLLM serves OlmoHybridForCausalLM (0.26.0 with vllm_compat's loader fix).
        # vLLM refuses a max_model_len above the length it derives from the checkpoint (max_position_embeddings,
        # YaRN's original x factor, the tokenizer's model_max_length), and the cap is the largest length plus
        # CONTEXT_MARGIN, so it is always above a model trained or extended to exactly that length. Evaluating
        # past the trained length is the point of RULER here, as with the hf and longctx backends; its RoPE table
        # is made long enough where that leaves the model as it is (vllm_rope), else eval refused the lengths.
        os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
        no_flashinfer_sampler()
        from longctx.evaluate.vllm_compat import register
        from longctx.evaluate.vllm_rope import hf_overrides

        register()  # Olmo Hybrid's conv weights (vLLM runs it in its engine process too, as a plugin)
        args = {"pretrained": model, "dtype": spec.dtype, "max_model_len": max_len}
        overrides = hf_overrides(model, max_len, max(spec.lengths))
        if overrides:
            args["hf_overrides"] = overrides
        if spec.share_prefixes:  # vLLM 0.26 leaves it off for hybrid models, on for transformers
            args["enable_prefix_caching"] = True
        return get_model("vllm").create_from_arg_obj(args, {"batch_size": spec.batch_size or "auto"})
    args = {"pretrained": model, "dtype": spec.dtype, "max_length": max_len}
    if spec.backend == "longctx":
        import longctx.evaluate.lm_model  # noqa: F401

        args["share_prefixes"] = spec.share_prefixes
    auto = "auto" if spec.backend == "longctx" else 1  # longctx sizes its batches from memory, per length
    extra = {"batch_size": spec.batch_size or auto, "device": spec.device or default_device()}
    return get_model(spec.backend).create_from_arg_obj(args, extra)


def haystack_source(spec: EvalSpec) -> str:
    """The essay haystack of the essay tasks (source and digest); offline it is the bundled text."""
    from eval_tasks.ruler import DataUnavailable, sources

    try:
        src = sources("niah_single_2", spec.data_opts())  # a task on the essay haystack
    except DataUnavailable as e:
        return f"unavailable ({str(e).splitlines()[0]})"
    return f"{src['haystack']} (sha256:{src['haystack_digest']})"


def task_metadata(spec: EvalSpec, length: int) -> dict:
    # `pretrained`/`tokenizer`: the generators size prompts with the model's own tokenizer.
    model = str(Path(spec.model).resolve())
    return {
        "pretrained": model,
        "tokenizer": model,
        "max_seq_lengths": [length],
        "max_length": max(spec.lengths) + CONTEXT_MARGIN,  # build_lm's; the tasks refuse prompts beyond it
        "num_samples": spec.samples,
        "chat_template": spec.chat_template,
        "seed": spec.seed,
        **spec.data_opts(),
        **({"temperature_per_length": True} if spec.temperature_per_length else {}),
    }


def cell_score(out: dict, task: str, length: int) -> tuple[float, int] | None:
    """The task's score at `length` (the per-length metric eval_tasks declares) and its sample
    count, from simple_evaluate's output; None when lm-eval ran no sample (a skipped task)."""
    n = int(out.get("n-samples", {}).get(task, {}).get("effective", 0))
    metrics = out["results"].get(task, {})
    value = metrics.get(f"{length},none")
    if n == 0:
        return None
    if not isinstance(value, (int, float)) or math.isnan(value):
        raise RuntimeError(f"{task}: no metric for length {length} in lm-eval output {sorted(metrics)}")
    if not 0 <= value <= 100:
        raise RuntimeError(f"{task} at {length}: score {value} is not in 0..100")
    return float(value), n


def evaluate_ruler(
    spec: EvalSpec,
    lm: Any = None,
    log: Callable[[str], None] | None = None,
    ranks: Any = None,
) -> dict:
    """Evaluate every (task, length) of `spec`, write `spec.out`, and return the results dict.

    `lm`: an lm-eval LM to use instead of building one from `spec.backend` (tests pass one).
    `ranks`: this process's place in a data-parallel evaluation (longctx.evaluate.ranks); each process
    answers a share of every cell, all score it, rank 0 alone writes the journal and `spec.out`.
    """
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from eval_tasks import TASKS_DIR
    from eval_tasks.ruler import DataUnavailable, LengthTooShort, sources

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    quiet_git_hash()
    log_to_current_stderr()
    env_info_once()
    main = ranks is None or ranks.main
    journal = Journal(journal_path(spec.out), journal_fingerprint(spec), writable=main)
    if ranks is not None:
        ranks.barrier()  # every process has read the journal before rank 0 adds to it
    res = R.new_results(
        model=spec.model,
        rope_parameters=R.read_rope_parameters(spec.model),
        tasks=spec.tasks,
        lengths=spec.lengths,
        backend=spec.backend,
        chat_template=spec.chat_template,
        samples=spec.samples,
        haystack=haystack_source(spec),
        lm_eval_version=lm_eval.__version__,
        label=spec.label,
        train=R.read_train(spec.model),
    )
    if spec.share_prefixes:
        res["share_prefixes"] = True  # a shared prefill (longctx) or vLLM's prefix cache answered it
    record = temperature_record(spec) if spec.temperature_per_length else None
    if record is not None:
        from longctx.model.temperature import PerLengthTemperature

        betas = {str(n): PerLengthTemperature.beta_at(record, n) for n in spec.lengths}
        res["temperature"] = {"c": record["c"], "base_len": record["base_len"], "per_length": True, "beta": betas}
    total = len(spec.tasks) * len(spec.lengths)
    pace = Pace([(t, n) for n in spec.lengths for t in spec.tasks], spec.samples)
    wrapped, retemper, tempered_at, chunked = None, None, None, False
    owned = lm is None  # built here (not a caller's): stopped here

    def unavailable(task: str, length: int, where: str, reason: str, said: str | None = None) -> None:
        pace.done((task, length))
        R.set_unavailable(res, task, length, reason)
        log(f"{where}: {said or f'unavailable ({reason})'}")

    try:
        i = 0
        for length in spec.lengths:
            manager = None
            for task in spec.tasks:
                i += 1
                where = f"[{i}/{total}] {task} @ {format_length(length)}"
                done = journal.cell(task, length, spec.samples)
                if done is not None:
                    pace.done((task, length))
                    R.set_score(res, task, length, **done)  # the entry journaled below, seconds and all
                    log(f"{where}: {done['score']:.1f} ({done['samples']} samples, from {journal.path.name})")
                    continue
                try:  # the QA sets offline (or an essay haystack forced offline) cannot run here
                    source = sources(task, spec.data_opts())["haystack"]
                except DataUnavailable as e:
                    unavailable(task, length, where, str(e).splitlines()[0], f"unavailable ({e})")
                    continue
                if wrapped is None:
                    log(f"answers from {journal.path.name} alone" if spec.finished_only
                        else f"loading {spec.model} ({spec.backend} backend)")  # fmt: skip
                    chunked = spec.backend == "vllm" and lm is None  # sized per length below
                    if spec.finished_only:
                        lm = journal_only_lm()
                    wrapped = ResumableLM(lm if lm is not None else build_lm(spec), journal, ranks=ranks)
                    if record is not None and not spec.finished_only:
                        from longctx.model.temperature import PerLengthTemperature, stored_q_norms

                        stored = stored_q_norms(spec.model, record["layers"])
                        retemper = PerLengthTemperature(torch_model(wrapped.lm), record, stored)
                if retemper is not None and tempered_at != length:
                    beta = retemper.set(length)
                    tempered_at = length
                    log(f"DRoPE temperature at {format_length(length)}: beta = {beta:.4g}")
                if manager is None:
                    manager = TaskManager(
                        include_path=str(TASKS_DIR), include_defaults=False, metadata=task_metadata(spec, length)
                    )
                if chunked:
                    wrapped.chunk = vllm_chunk(length)
                size = getattr(wrapped.lm, "set_generation_capacity", None)
                batch = size(length + CONTEXT_MARGIN) if size is not None else None
                left = pace.seconds_left()
                said = ([f"batches of up to {batch}"] if batch else []) + ([f"{duration(left)} left"] if left else [])
                log(f"{where}: running" + (f" ({'; '.join(said)})" if said else ""))
                wrapped.tag = {"task": task, "length": length}
                t0, reused = time.time(), wrapped.reused
                try:
                    with one_process_to_lm_eval(ranks):
                        out = simple_evaluate(
                            model=wrapped, tasks=[task], task_manager=manager, limit=spec.samples,
                            apply_chat_template=spec.chat_template, bootstrap_iters=0, log_samples=False,
                        )  # fmt: skip
                except Unanswered as e:
                    said = f"not finished ({e} of {spec.samples} answers not in {journal.path.name})"
                    unavailable(task, length, where, R.NOT_FINISHED, said)
                    continue
                except LengthTooShort as e:  # e.g. CWE's one-shot example alone fills 1k tokens
                    unavailable(task, length, where, f"length too short: {e}")
                    continue
                scored = cell_score(out, task, length)
                if scored is None:  # eval_tasks skipped it: its data vanished after the check above
                    reason = "no samples ran (task skipped by lm-eval)"
                    unavailable(task, length, where, reason, "unavailable (no samples ran)")
                    continue
                score, n = scored
                seconds = time.time() - t0
                # the cell's time is kept only when this run generated every answer (a speed figure per cell)
                entry = {"score": score, "samples": n, "haystack": source}
                if wrapped.reused == reused:
                    entry["seconds"] = round(seconds, 2)
                pace.done((task, length), entry.get("seconds"))
                R.set_score(res, task, length, **entry)
                journal.add_cell(task, length, spec.samples, entry)
                gen = getattr(wrapped.lm, "take_generation_stats", lambda: None)()
                said = f"{n} samples, {wrapped.reused - reused} from journal, {seconds:.1f} s"
                if gen:  # where the cell's time went: in the model, or around it (lm-eval, tokenizing, scoring)
                    batches = f"{gen['calls']} batch" + ("es" if gen["calls"] != 1 else "")
                    said += f" ({gen['generate_s']:.1f} s generating: {batches}, {gen['decode_steps']} decode steps)"
                    said += f", prefill {100 * gen['shared']:.0f}% shared" if gen["shared"] else ""
                log(f"{where}: {score:.1f} ({said})")
    finally:
        journal.close()
        if owned and spec.backend == "vllm" and wrapped is not None:
            from longctx.evaluate.vllm_engine import stop_vllm_engine

            stop_vllm_engine(wrapped.lm)
        if ranks is not None and wrapped is not None:
            print(f"[rank {ranks.rank} of {ranks.world}] generated {wrapped.computed} answers", file=sys.stderr)
    if main:
        R.save(res, spec.out)
    return res
