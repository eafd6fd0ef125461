"""RULER-style evaluation throughput: greedy generation after long prompts, ours against transformers.

On the GPU machine (one H100; repo root; fla installed), one call of at most 10 minutes:

    OUT=${OUT:-./bench_out} python bench/eval_throughput.py --config hybrid-1b --lengths 16384,65536 --samples 8

CPU smoke test (seconds):

    python bench/eval_throughput.py --device cpu --config hybrid-tiny --lengths 256 --samples 3 --max-new-tokens 4

Per length T: --samples prompts of T - --max-new-tokens tokens (so prompt + answer fit in T, as
RULER sizes them): random tokens (default; enough for throughput) or `--prompts ruler`, RULER
samples of `--ruler-task` from `eval_tasks.ruler.generate` with the default longctx tokenizer.
Both implementations run the same bf16 weights (ours is built from the config, or loaded with
--model, and saved to a temporary HF checkpoint that transformers loads), greedy, --max-new-tokens
tokens, stopping at the config's EOS.
- peer: transformers `model.generate(do_sample=False)` one prompt at a time, what
  `lm_eval --model hf` does at batch size 1; `--peer-batch N`: N prompts per call, left-padded with an
  attention mask (lm-eval's hf batching; N = --samples is the batch ours and vLLM get).
- ours: `longctx.model.generate.greedy_generate(model, prompts, max_new_tokens, eos_token_ids)`,
  all prompts in one call (batched decoding; `--ours-batch` caps prompts per call; `--cuda-graphs`
  passes cuda_graphs=True: decode steps replayed from one CUDA graph, eager on CPU).
- vllm (`--impl vllm`, GPU only): vLLM on the same checkpoint (ours saved as an HF model) and the same
  prompt ids, after ours and the peer have run and freed the GPU, in a process of its own
  (bench/vllm_peer/throughput.py: one vllm.LLM for every length, all of a length's prompts in one generate
  call, greedy, stopping at EOS); agreement is reported against ours.
Reported: samples/s (prompts / wall time of generation, prefill included), forward tokens/s (one
forward over each prompt, last-token logits only: transformers `logits_to_keep=1`, ours
`forward_hidden` + head on the last token), ours' cache prefill tokens/s
(`longctx.model.generate.prefill`, what greedy_generate runs first), and the agreement rate: the
fraction of prompts whose generated tokens are identical in both. Each timed phase runs once
untimed on the first prompt first (kernel compilation / autotuning). OOM is reported as "OOM"
and the run goes on. Results go to $OUT/eval_throughput.json (after every measurement); the
table is printed last. With random weights greedy argmaxes sit close together, so bf16 noise
can flip them: agreement is meaningful mainly with a trained checkpoint (--model).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    add_fused_arg,
    add_run_args,
    add_varlen_arg,
    apply_fused_arg,
    apply_varlen_arg,
    free,
    is_oom,
    parse_lengths,
    parse_list,
    profile_once,
    versions,
)  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

IMPLS = ("ours", "peer", "vllm")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="hybrid-1b", help="model config (configs/models name); random weights")
    p.add_argument(
        "--model", default=None, help="a checkpoint dir to load instead of --config (HybridLM.from_pretrained)"
    )
    p.add_argument("--lengths", default="16384,65536", help="total lengths (prompt + answer), comma-separated")
    p.add_argument("--samples", type=int, default=8, help="prompts per length")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--impl", default="ours,peer", help="ours, peer, vllm, comma-separated (vllm: see below)")
    p.add_argument(
        "--vllm-python",
        default=sys.executable,
        help="--impl vllm: the Python that runs bench/vllm_peer/throughput.py (PYTHONPATH with vLLM: "
        "bench/vllm_peer/install.sh)",
    )
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.85)
    p.add_argument(
        "--vllm-max-num-batched-tokens",
        type=int,
        default=0,
        help="--impl vllm: tokens per engine step, its prefill chunk (0: vLLM's default, 16,384 on an H100/H200)",
    )
    p.add_argument("--vllm-enforce-eager", action="store_true", help="--impl vllm: no torch.compile, no CUDA graphs")
    p.add_argument(
        "--vllm-max-capture",
        type=int,
        default=0,
        help="--impl vllm: the largest batch it captures a CUDA graph for (0: vLLM's default); a start-up setting, "
        "the timed batch replays the same graph as long as it is no larger",
    )
    p.add_argument("--prompts", default="random", choices=("random", "ruler"))
    p.add_argument("--ruler-task", default="niah_single_1", help="with --prompts ruler")
    p.add_argument("--ours-batch", type=int, default=0, help="prompts per greedy_generate call (0: all)")
    p.add_argument(
        "--peer-batch",
        type=int,
        default=1,
        help="prompts per transformers generate call, left-padded (1: lm_eval --model hf's default; --samples: "
        "the same batch as ours and vLLM)",
    )
    p.add_argument(
        "--prefill-tokens",
        type=int,
        default=0,
        help="ours: max_prefill_tokens of greedy_generate, tokens packed per prefill row (0: its default, "
        "generate.MAX_PREFILL_TOKENS); "
        "at 64k a row holds one prompt, so more prompts per row give fla's kernel more sequences to spread",
    )
    p.add_argument(
        "--share-prefixes",
        action="store_true",
        help="ours: greedy_generate(share_prefixes=True), the prefixes the prompts share prefilled once "
        "(rows record the share of prompt tokens not prefilled); with --impl vllm, pair it with --vllm-prefix-caching",
    )
    p.add_argument(
        "--vllm-prefix-caching",
        action="store_true",
        help="vLLM with enable_prefix_caching=True (its default for hybrid models in 0.26 is off)",
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="ours decodes with greedy_generate(cuda_graphs=True): each step replayed from one CUDA graph",
    )
    p.add_argument(
        "--keep-graph",
        action="store_true",
        help="with --cuda-graphs: greedy_generate(keep_graph=True): the warm-up's cache and captured graph serve "
        "the timed call (as vLLM captures its graphs once, at start-up)",
    )
    add_fused_arg(p)
    add_varlen_arg(p, "packed prompts and sliding windows (instead of SDPA a document or window block at a time)")
    p.add_argument(
        "--fla-intracard",
        action="store_true",
        help="set FLA_INTRACARD_CP=1: fla splits each long prompt's recurrence over more SMs (inference only)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="after timing, profile one greedy_generate call of ours: OUT/profile_eval_ours_<T>.txt + trace",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed runs before each phase, with the timed call's arguments (0: none)",
    )
    p.add_argument("--device", default="cuda", help="cuda or cpu (smoke test)")
    add_run_args(p)
    return p


def validate(args) -> None:
    args.lengths = parse_lengths(args.lengths)
    args.impl = parse_list(args.impl)
    bad = [i for i in args.impl if i not in IMPLS]
    if bad or not args.impl:
        sys.exit(f"--impl {bad or args.impl}: accepted: {', '.join(IMPLS)}")
    if args.peer_batch < 1:
        sys.exit(f"--peer-batch {args.peer_batch}: need >= 1")
    counts = (args.ours_batch, args.prefill_tokens, args.vllm_max_num_batched_tokens, args.vllm_max_capture)
    if args.samples < 1 or args.max_new_tokens < 1 or args.warmup < 0 or min(counts) < 0:
        sys.exit(
            "--samples >= 1, --max-new-tokens >= 1, --warmup >= 0, --ours-batch >= 0, --prefill-tokens >= 0, "
            "--vllm-max-num-batched-tokens >= 0, --vllm-max-capture >= 0 required"
        )
    if not args.lengths or min(args.lengths) <= args.max_new_tokens:
        sys.exit(f"--lengths {args.lengths}: each must exceed --max-new-tokens ({args.max_new_tokens})")
    if args.device not in ("cuda", "cpu") and not args.device.startswith("cuda:"):
        sys.exit(f"--device {args.device!r}: accepted: cuda, cuda:N, cpu")
    if args.keep_graph and not args.cuda_graphs:
        sys.exit("--keep-graph keeps the CUDA graph of --cuda-graphs: give both")


def ours_generate_fn():
    """greedy_generate, or None with the reason when longctx.model.generate is missing or differs."""
    import inspect

    try:
        from longctx.model.generate import greedy_generate
    except ImportError as e:
        return None, f"longctx.model.generate.greedy_generate not importable ({e})"
    params = list(inspect.signature(greedy_generate).parameters)
    if params[:4] != ["model", "prompts", "max_new_tokens", "eos_token_ids"]:
        return None, f"greedy_generate has signature {params}, expected (model, prompts, max_new_tokens, eos_token_ids)"
    return greedy_generate, None


# ---------------------------------------------------------------- prompts


def make_prompts(args, config, T: int) -> list[list[int]]:
    import torch

    n = T - args.max_new_tokens
    if args.prompts == "ruler":
        from eval_tasks.ruler import generate
        from longctx.data.tokenizer import load_tokenizer

        tok = load_tokenizer(None)
        samples = generate(args.ruler_task, T, args.samples, tok, seed=args.seed)
        prompts = [tok(s["input"] + s.get("gen_prefix", ""), add_special_tokens=False)["input_ids"] for s in samples]
        top = max(max(p) for p in prompts)
        if top >= config.vocab_size:
            sys.exit(
                f"--prompts ruler: token id {top} >= the model's vocab_size {config.vocab_size}; use --prompts random"
            )
        return prompts
    gen = torch.Generator().manual_seed(args.seed + T)
    specials = {x for x in (_ids(config.eos_token_id) + _ids(config.pad_token_id))}
    ids = torch.randint(0, config.vocab_size, (args.samples, n), generator=gen)
    for s in specials:  # no EOS / pad inside a prompt
        ids[ids == s] = (s + 1) % config.vocab_size
    return ids.tolist()


def _ids(x) -> list[int]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [int(x)]


# ---------------------------------------------------------------- the two implementations


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def cut_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[:i]
    return tokens


def run_peer(peer, prompts, args, device, eos) -> dict:
    import torch

    pad = peer.config.pad_token_id if peer.config.pad_token_id is not None else 0

    def forward(p):
        ids = torch.tensor([p], device=device)
        with torch.no_grad():
            return peer(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].float()

    def generate(batch, k):
        """One generate call on a batch of prompts, left-padded with attention_mask 0 (as lm-eval's hf model
        batches them); each prompt's new tokens, cut at EOS."""
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.no_grad():
            out = peer.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=k,
                do_sample=False,
                eos_token_id=sorted(eos) or None,
                pad_token_id=pad,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        return [cut_eos(row[width:].tolist(), eos) for row in out]

    for _ in range(args.warmup):
        forward(prompts[0])
    fwd = [timed(lambda p=p: forward(p), device)[1] for p in prompts]
    size = args.peer_batch
    batches = [prompts[i : i + size] for i in range(0, len(prompts), size)]
    for _ in range(args.warmup):  # the timed call's arguments: a 2-token warm-up left a one-off cost in it
        generate(batches[0], args.max_new_tokens)
    outs, gen_times = [], []
    for b in batches:
        o, dt = timed(lambda b=b: generate(b, args.max_new_tokens), device)
        outs += o
        gen_times.append(dt)
    return result(prompts, fwd, gen_times, outs, device)


def run_ours(model, prompts, args, device, eos, greedy_generate) -> dict:
    import torch

    def forward(p):
        ids = torch.tensor([p], device=device)
        with torch.no_grad():
            return model.lm_head(model.forward_hidden(ids)[0, -1]).float()

    for _ in range(args.warmup):
        forward(prompts[0])
    fwd = [timed(lambda p=p: forward(p), device)[1] for p in prompts]

    from longctx.model.generate import MAX_PREFILL_TOKENS

    # greedy_generate's keyword arguments, the same for the prefill timing, the warm-up and the run
    kw = {"max_prefill_tokens": args.prefill_tokens or MAX_PREFILL_TOKENS, "cuda_graphs": args.cuda_graphs,
          "keep_graph": args.keep_graph}  # fmt: skip
    if args.share_prefixes:
        from longctx.model.prefix import plan_shared_prefill

        kw["share_prefixes"] = True
    # warm up on as many prompts as greedy_generate packs into one prefill row: a packed row takes
    # another attention path (one SDPA call per prompt) than a single prompt does
    # (sharing: the plan of the whole batch, whose levels are other shapes than a part's plan)
    warm = prompts[: max(1, min(len(prompts), kw["max_prefill_tokens"] // max(len(p) for p in prompts)))]
    if kw.get("share_prefixes"):
        warm = prompts
    row = {}
    try:
        from longctx.model.generate import prefill

        cap = max(len(p) for p in prompts) + args.max_new_tokens
        share = kw.get("share_prefixes", False)
        for _ in range(args.warmup):
            prefill(model, warm, cap, kw["max_prefill_tokens"], share)
        _, pre_s = timed(lambda: prefill(model, prompts, cap, kw["max_prefill_tokens"], share), device)
        row["prefill_tok_s"] = sum(len(p) for p in prompts) / pre_s  # prompt tokens, prefilled or shared
        row["prefill_s"] = pre_s
    except ImportError:
        row["prefill_tok_s"] = None
    gc.collect()

    batch = args.ours_batch or len(prompts)
    for _ in range(args.warmup):  # the first timed call's exact arguments: same cache shapes, same graph
        greedy_generate(model, prompts[:batch], args.max_new_tokens, eos, **kw)
    outs, gen_times = [], []
    for i in range(0, len(prompts), batch):
        o, dt = timed(
            lambda i=i: greedy_generate(model, prompts[i : i + batch], args.max_new_tokens, eos, **kw), device
        )
        outs += [list(x) for x in o]
        gen_times.append(dt)
    row.update(result(prompts, fwd, gen_times, outs, device))
    row["ours_batch"] = batch
    if args.share_prefixes:
        plans = [plan_shared_prefill(prompts[i : i + batch]) for i in range(0, len(prompts), batch)]
        row["shared_tokens"] = 1 - sum(p.computed for p in plans) / sum(p.total for p in plans)
        row["share_levels"] = [len(p.levels) for p in plans]  # prefills per call (each a forward of the model)
    if args.profile:  # after the timed run: a profile that fails costs the row nothing (kept graph: replayed)
        try:
            row["profile"] = profile_once(
                lambda: greedy_generate(model, prompts[:batch], args.max_new_tokens, eos, **kw),
                args.out,
                f"eval_ours_{len(prompts[0])}",
                device,
            )
        except Exception as e:  # noqa: BLE001
            row["profile_error"] = f"{type(e).__name__}: {e}"[:2000]
            traceback.print_exc()
    if args.keep_graph:  # the kept cache and graph hold GPU memory the next implementation needs
        from longctx.model.generate import release_kept

        release_kept()
    return row


# vLLM's output when its engine process has died: the parent can then wait on it for good (seen on an H200: a
# device-side assert in the engine, then the parent idle until the time budget), so it is stopped DEAD_GRACE_S later
DEAD_ENGINE = ("engine core exited unexpectedly", "EngineDeadError", "device-side assert triggered")
DEAD_GRACE_S = 30.0


def wait_vllm(proc, log_file: Path, left: float) -> str | None:
    """Wait for vLLM's process (a session of its own) up to `left` s; stop its group at the budget, or DEAD_GRACE_S
    after its log says its engine died. None when it exited 0, else why not."""
    t0, dead, tail = time.perf_counter(), None, ""
    with open(log_file, errors="replace") as reader:  # read on from where the last look stopped, not all again
        while (rc := proc.poll()) is None:
            now = time.perf_counter()
            if dead is None:
                seen = tail + reader.read()
                if any(m in seen for m in DEAD_ENGINE):
                    dead = now
                tail = seen[-max(map(len, DEAD_ENGINE)) :]  # a line the last read cut in two
            if now - t0 >= left or (dead is not None and now - dead >= DEAD_GRACE_S):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if dead is not None:
                    return f"its engine died; stopped {DEAD_GRACE_S:.0f} s later; its output: {log_file}"
                return f"stopped at the time budget ({left:.0f} s left when it started); its output: {log_file}"
            time.sleep(min(1.0, max(0.0, left - (now - t0))))
    return None if rc == 0 else f"exit {rc}: {log_file.read_text(errors='replace')[-1500:]}"


def run_vllm(ckpt: Path, by_len: dict, args, eos: set[int], out_dir: Path, start: float) -> dict[int, dict]:
    """vLLM on the same checkpoint and prompts (bench/vllm_peer/throughput.py, a process of its own): a row a length."""
    import subprocess

    prompts_file, rows_file = out_dir / "vllm_prompts.json", out_dir / "vllm_rows.json"
    prompts_file.write_text(json.dumps({str(T): p for T, p in by_len.items()}))
    rows_file.unlink(missing_ok=True)
    script = REPO / "bench" / "vllm_peer" / "throughput.py"
    cmd = [args.vllm_python, str(script), str(ckpt), "--prompts", str(prompts_file),
           "--max-tokens", str(args.max_new_tokens), "--eos", ",".join(map(str, sorted(eos))),
           "--warmup", str(args.warmup), "--gpu-memory-utilization", str(args.vllm_gpu_memory_utilization),
           "--max-num-batched-tokens", str(args.vllm_max_num_batched_tokens), "--out", str(rows_file)]  # fmt: skip
    if args.vllm_prefix_caching:
        cmd.append("--enable-prefix-caching")
    if args.vllm_enforce_eager:
        cmd.append("--enforce-eager")
    if args.vllm_max_capture:
        cmd += ["--max-cudagraph-capture-size", str(args.vllm_max_capture)]
    log_file = out_dir / "vllm_log.txt"  # vLLM's own output as it goes: where a slow start or a stall spends its time
    left = args.budget_s - (time.perf_counter() - start)
    base = {T: {"impl": "vllm", "seq_len": T, "samples": len(p), "max_new_tokens": args.max_new_tokens,
                "prompt_tokens": max(map(len, p))} for T, p in by_len.items()}  # fmt: skip
    if left <= 0:
        return {
            T: {**r, "status": "skipped", "reason": f"time budget {args.budget_s:.0f} s spent"} for T, r in base.items()
        }
    print(f"[{time.perf_counter() - start:6.0f}s] vllm: {' '.join(cmd)} (log: {log_file})", file=sys.stderr, flush=True)
    with open(log_file, "w") as log:  # a session of its own: a stop takes vLLM's engine-core process too
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its log lines as they come, even when it is stopped
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        failure = wait_vllm(proc, log_file, left)
    got = json.loads(rows_file.read_text()) if rows_file.is_file() else {"rows": {}}
    out = {}
    for T, r in base.items():
        row = got["rows"].get(str(T))
        out[T] = {**r, **row, "vllm": got.get("meta", {})} if row else {**r, "status": "error", "error": failure}
    return out


def token_agreement(ours: list[list[int]], theirs: list[list[int]]) -> dict:
    """Prompts whose continuations are identical, and whose first tokens are."""
    pairs = list(zip(ours, theirs, strict=True))
    return {
        "n": len(pairs),
        "identical": sum(a == b for a, b in pairs),
        "first_token": sum(a[:1] == b[:1] for a, b in pairs),
    }


def divergences(model, peer, prompts, ours, theirs, device) -> list[dict]:
    """Where each differing pair of outputs first splits, and by how much each model prefers its own
    token there: logit(own pick) - logit(other's pick) after prompt + the shared prefix. Gaps near
    bf16 resolution (~0.1) are numerical ties; large ones are a real difference."""
    import torch

    out = []
    for i, (x, y) in enumerate(zip(ours, theirs, strict=True)):
        if x == y:
            continue
        # the outputs may differ in length (EOS): compare the common prefix, else split where the shorter ends
        n = next((j for j, (u, v) in enumerate(zip(x, y, strict=False)) if u != v), min(len(x), len(y)))
        row = {"prompt": i, "at": n}
        if n < len(x) and n < len(y):
            ids = torch.tensor([prompts[i] + x[:n]], device=device)
            with torch.no_grad():
                mine = model.lm_head(model.forward_hidden(ids)[0, -1]).float()
                try:  # the last position's logits only (64k x vocab would be 13 GB)
                    other = peer(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
                except TypeError:
                    other = peer(input_ids=ids).logits[0, -1].float()
            row["ours_gap"] = round(float(mine[x[n]] - mine[y[n]]), 4)
            row["peer_gap"] = round(float(other[y[n]] - other[x[n]]), 4)
        else:
            row["reason"] = "one output stopped (EOS) where the other went on"
        out.append(row)
    return out


def result(prompts, fwd_times, gen_times, outs, device) -> dict:
    import torch

    tokens = sum(len(p) for p in prompts)
    total = sum(gen_times)
    return {
        "status": "ok",
        "samples_per_s": len(prompts) / total,
        "generate_s": total,
        "generate_call_s": gen_times,
        "forward_tok_s": tokens / sum(fwd_times),
        "forward_s": fwd_times,
        "forward_s_median": statistics.median(fwd_times),
        "generated": outs,
        "generated_tokens_mean": sum(len(o) for o in outs) / len(outs),
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


# ---------------------------------------------------------------- report


def cell(row, key, spec):
    if row is None:
        return "-"
    if row["status"] != "ok":
        return row["status"] if row["status"] in ("OOM", "skipped") else "error"
    v = row.get(key)
    return "-" if v is None else f"{v:{spec}}"


def table(results: list[dict], agreement: dict, peer_batch: int = 1) -> str:
    by = {(r["seq_len"], r["impl"]): r for r in results}
    head = [
        "T",
        "prompt tok",
        f"peer samples/s (batch {peer_batch})",
        "ours samples/s",
        "speed-up",
        "peer fwd tok/s",
        "ours fwd tok/s",
        "ours prefill tok/s",
        "agreement",
    ]
    shared = any(r.get("shared_tokens") is not None for r in results)
    if shared:  # --share-prefixes: the share of prompt tokens ours did not prefill
        head.insert(-1, "ours shared")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for T in sorted({r["seq_len"] for r in results if r["impl"] in ("ours", "peer")}):
        o, p = by.get((T, "ours")), by.get((T, "peer"))
        ok = o and p and o["status"] == "ok" and p["status"] == "ok"
        agree = agreement.get(T)
        cells = [
            str(T),
            str((o or p)["prompt_tokens"]),
            cell(p, "samples_per_s", ".3f"),
            cell(o, "samples_per_s", ".3f"),
            f"{o['samples_per_s'] / p['samples_per_s']:.2f}x" if ok else "-",
            cell(p, "forward_tok_s", ",.0f"),
            cell(o, "forward_tok_s", ",.0f"),
            cell(o, "prefill_tok_s", ",.0f"),
            "-" if agree is None else f"{agree['identical']}/{agree['n']}",
        ]
        if shared:
            cells.insert(-1, cell(o, "shared_tokens", ".1%"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def vllm_table(results: list[dict], agreement: dict) -> str:
    """ours against vLLM per length: samples/s, the ratio, token agreement."""
    by = {(r["seq_len"], r["impl"]): r for r in results}
    head = ["T", "vllm samples/s", "ours samples/s", "ours / vllm", "identical", "first token"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for T in sorted({r["seq_len"] for r in results if r["impl"] == "vllm"}):
        v, o = by.get((T, "vllm")), by.get((T, "ours"))
        ok = v and o and v["status"] == "ok" and o["status"] == "ok"
        a = agreement.get(T)
        lines.append("| " + " | ".join([str(T), cell(v, "samples_per_s", ".3f"), cell(o, "samples_per_s", ".3f"),
                                        f"{o['samples_per_s'] / v['samples_per_s']:.2f}x" if ok else "-",
                                        f"{a['identical']}/{a['n']}" if a else "-",
                                        f"{a['first_token']}/{a['n']}" if a else "-"]) + " |")  # fmt: skip
    return "\n".join(lines)


def graphs_note(args, device) -> str:
    if not args.cuda_graphs:
        return ""
    return ", decode steps replayed from a CUDA graph" if device.type == "cuda" else ", --cuda-graphs (CPU: eager)"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    validate(args)
    args.fused_elementwise_state = apply_fused_arg(args)
    if args.fla_intracard:
        os.environ["FLA_INTRACARD_CP"] = "1"  # fla reads it when it dispatches a kernel
    apply_varlen_arg(args)
    import torch

    from longctx.model import HybridLM, load_config, rope_kernel

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device; use --device cpu for the smoke test")
    greedy_generate, why_not = ours_generate_fn() if "ours" in args.impl else (None, None)
    impls = list(args.impl)
    if "ours" in impls and greedy_generate is None:
        print(f"SKIPPING ours: {why_not}", file=sys.stderr)
        impls.remove("ours")
        if not impls:
            sys.exit(f"nothing to run: {why_not}")

    from longctx.errors import UsageError

    if not args.model:
        try:
            load_config(args.config)
        except UsageError as e:
            sys.exit(f"--config: {e}")
    t0 = time.perf_counter()
    if args.model:
        model = HybridLM.from_pretrained(args.model, dtype=torch.bfloat16, device=device)
        source = str(args.model)
    else:
        config = load_config(args.config)
        torch.manual_seed(args.seed)
        with torch.device(device):
            model = HybridLM(config)
        source = f"{args.config} (random init, seed {args.seed})"
    model = model.to(device=device, dtype=torch.bfloat16).eval()
    config = model.config
    eos = set(_ids(config.eos_token_id))
    peer = None
    tmp = None
    if "peer" in impls or "vllm" in impls:
        # the same weights in transformers' format: save ours (HybridLM.save_pretrained writes what
        # AutoModelForCausalLM, and vLLM, load with the same logits); kept for vLLM until the end
        tmp = tempfile.TemporaryDirectory(prefix="eval_throughput_")
        model.save_pretrained(Path(tmp.name) / "ckpt")
    if "peer" in impls:
        from transformers import AutoModelForCausalLM

        peer = AutoModelForCausalLM.from_pretrained(Path(tmp.name) / "ckpt", dtype=torch.bfloat16).to(device).eval()
    build_s = time.perf_counter() - t0
    if "ours" not in impls:
        del model
        model = None
        free(device)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / "eval_throughput.json"
    meta = {
        "script": "bench/eval_throughput.py",
        "argv": sys.argv[1:],
        "args": dict(vars(args)),
        "model": source,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": versions(),
        "build_s": build_s,
        "ours_skipped": why_not,
        "peer_class": type(peer).__name__ if peer is not None else None,
        "peer_attn_implementation": getattr(peer.config, "_attn_implementation", None) if peer is not None else None,
        "dtype": "bfloat16",
        "eos_token_ids": sorted(eos),
        "ours_cuda_graphs": bool(args.cuda_graphs),
        "ours_keep_graph": bool(args.keep_graph),
        "peer_batch": args.peer_batch,  # prompts per transformers generate call
        "fla_intracard_cp": os.environ.get("FLA_INTRACARD_CP"),
        "ours_varlen_attention": bool(args.varlen_attention),
        "ours_fused_elementwise": args.fused_elementwise_state,
        "ours_fused_rope": rope_kernel.available(),  # on CUDA: the kernel rotates q/k
    }
    results: list[dict] = []
    agreement: dict = {}
    vllm_agreement: dict = {}  # ours against vLLM, per length

    def save():
        out_file.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "results": results,
                    "agreement": {str(k): v for k, v in agreement.items()},
                    "vllm_agreement": {str(k): v for k, v in vllm_agreement.items()},
                },
                indent=2,  # fmt: skip
            )
        )

    start = time.perf_counter()
    by_len: dict[int, list[list[int]]] = {}
    for T in args.lengths:
        prompts = by_len[T] = make_prompts(args, config, T)
        for impl in ("peer", "ours"):
            if impl not in impls:
                continue
            row = {
                "impl": impl,
                "seq_len": T,
                "samples": len(prompts),
                "max_new_tokens": args.max_new_tokens,
                "prompt_tokens": max(len(p) for p in prompts),
            }
            if time.perf_counter() - start > args.budget_s:
                row.update(status="skipped", reason=f"time budget {args.budget_s:.0f} s spent")
            else:
                print(f"[{time.perf_counter() - start:6.0f}s] T={T} {impl} ...", file=sys.stderr, flush=True)
                try:
                    if impl == "peer":
                        row.update(run_peer(peer, prompts, args, device, eos))
                    else:
                        row.update(run_ours(model, prompts, args, device, eos, greedy_generate))
                except Exception as e:  # noqa: BLE001 - one failed cell must not end the run
                    if is_oom(e):
                        row["status"] = "OOM"
                    else:
                        row.update(status="error", error=f"{type(e).__name__}: {e}"[:2000])
                        traceback.print_exc()
                free(device)
            results.append(row)
            msg = f"{row['samples_per_s']:.3f} samples/s" if row["status"] == "ok" else row["status"]
            print(f"    -> {msg}" + (f" ({row['error']})" if row.get("error") else ""), file=sys.stderr, flush=True)
            save()
        got = {r["impl"]: r for r in results if r["seq_len"] == T and r["status"] == "ok"}
        if len(got) == 2:
            a, b = got["ours"]["generated"], got["peer"]["generated"]
            same = token_agreement(a, b)
            agreement[T] = {
                "n": same["n"],
                "identical": same["identical"],
                "rate": same["identical"] / same["n"],
                "first_token_rate": same["first_token"] / same["n"],
                "divergences": divergences(model, peer, prompts, a, b, device),
            }
            save()

    if "vllm" in impls:
        del model, peer
        free(device)
        for T, row in run_vllm(Path(tmp.name) / "ckpt", by_len, args, eos, out_dir, start).items():
            results.append(row)
            ours = next((r for r in results if r["impl"] == "ours" and r["seq_len"] == T and r["status"] == "ok"), None)
            if ours is not None and row["status"] == "ok":
                vllm_agreement[T] = token_agreement(ours["generated"], row["generated"])
        save()
    if tmp is not None:
        tmp.cleanup()

    print(
        f"\nModel: {source}; device: {meta['device']}; torch {meta['versions']['torch']}, transformers "
        f"{meta['versions']['transformers']}, fla {meta['versions']['fla']}; bf16; {args.samples} prompts per "
        f"length ({args.prompts}), {args.max_new_tokens} new tokens greedy. Peer: {meta['peer_class']}.generate "
        f"one prompt at a time; ours: greedy_generate, {args.ours_batch or 'all'} prompts per call"
        f"{graphs_note(args, device)}."
    )
    if why_not:
        print(f"Ours skipped: {why_not}")
    print("agreement = prompts whose generated tokens are identical in both / prompts.")
    print(f"JSON: {out_file}\n")
    if {"ours", "peer"} & set(impls):
        print(table(results, agreement, args.peer_batch))
    if vllm_agreement or any(r["impl"] == "vllm" for r in results):
        print("\n" + vllm_table(results, vllm_agreement))
    return 0


if __name__ == "__main__":
    sys.exit(main())
