"""vLLM's side of bench/eval_throughput.py (`--impl vllm`): greedy generation after the same prompt ids,
timed per length, in a process of its own (vLLM takes a share of the GPU's memory and starts an engine
process; the caller has freed the GPU before it starts this).

    python3 bench/vllm_peer/throughput.py CKPT --prompts PROMPTS.json --max-tokens 32 --out ROWS.json
        [--eos 1,2] [--warmup 1] [--enforce-eager] [--gpu-memory-utilization 0.85] [--max-num-batched-tokens N]
        [--enable-prefix-caching] [--max-cudagraph-capture-size N]

PROMPTS.json: {"<T>": [[token ids], ...], ...}, one list of prompts per total length T. One vllm.LLM is
built for every length (max_model_len: the longest T, the tokenizer not loaded: prompts are token ids);
per T, --warmup untimed generate calls on all of that length's prompts (the timed call's shapes: its prefill
chunks and mixed steps compile and capture there, as ours warms up on its timed call), then one timed generate
call on them at once (vLLM's scheduler batches them, chunked prefill and CUDA-graph decode as it
configures itself). Greedy, stopping at the --eos ids as longctx's greedy_generate does.
--max-num-batched-tokens sets the prefill chunk (the tokens of one engine step); by default vLLM picks its own
(16,384 for the LLM class on an H100 or H200, chunked prefill on). meta records what the engine resolved: the
scheduler's chunk and sequence limits and the compilation and CUDA-graph modes, the knobs a speed gap is read from.
ROWS.json: {"meta": {...}, "rows": {"<T>": {"samples_per_s", "generate_s", "generated", ...}}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="local HF checkpoint folder (config.json, *.safetensors)")
    p.add_argument("--prompts", required=True, help='JSON {"<T>": [[ids], ...]}')
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--eos", default="", help="comma-separated EOS ids to stop at (default: none)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--max-num-batched-tokens", type=int, default=0, help="tokens per engine step (0: vLLM's default)")
    p.add_argument("--enable-prefix-caching", action="store_true",
                   help="vLLM's prefix cache on (a batch's prompts then share their common prefixes' blocks); "
                        "emptied after the warm-up, so that no timed prompt finds the warm-up's blocks")  # fmt: skip
    p.add_argument("--max-cudagraph-capture-size", type=int, default=0,
                   help="the largest batch vLLM captures a CUDA graph for (0: its default, graphs for batches "
                        "up to 512 at start-up); a smaller timed batch replays the same graphs")  # fmt: skip
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.max_tokens < 1 or args.warmup < 0 or args.max_num_batched_tokens < 0 or args.max_cudagraph_capture_size < 0:
        p.error("--max-tokens >= 1, --warmup >= 0, --max-num-batched-tokens >= 0, --max-cudagraph-capture-size >= 0")
    return args


def load_prompts(path: str) -> dict[int, list[list[int]]]:
    """{T: prompts} from the JSON, each prompt a non-empty list of token ids, shortest T first."""
    raw = json.loads(Path(path).read_text())
    out = {}
    for key, prompts in raw.items():
        if not prompts or not all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompts):
            raise ValueError(f"prompts for {key}: give a non-empty list of non-empty token id lists")
        out[int(key)] = prompts
    return dict(sorted(out.items()))


def llm_kwargs(args: argparse.Namespace, longest: int) -> dict:
    chunk = {"max_num_batched_tokens": args.max_num_batched_tokens} if args.max_num_batched_tokens else {}
    if args.max_cudagraph_capture_size:
        chunk["compilation_config"] = {"max_cudagraph_capture_size": args.max_cudagraph_capture_size}
    # vLLM's RoPE table must hold the longest prompt (longctx.evaluate.vllm_rope): a position past it is an
    # out-of-bounds index in the compiled model
    if (Path(args.model) / "config.json").exists():
        from longctx.evaluate.vllm_rope import hf_overrides

        overrides = hf_overrides(args.model, longest, longest)
        if overrides:
            chunk["hf_overrides"] = overrides
    return {
        **chunk,
        "model": str(Path(args.model).resolve()),
        "dtype": "bfloat16",
        "max_model_len": longest,
        "enforce_eager": args.enforce_eager,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "skip_tokenizer_init": True,
        "enable_prefix_caching": args.enable_prefix_caching,  # off by default in vLLM 0.26 for hybrid models
        "seed": 0,
    }


def engine_settings(llm) -> dict:
    """The settings vLLM resolved for this engine (its defaults depend on the GPU and the model), as plain values."""
    cfg = llm.llm_engine.vllm_config
    sched, comp = cfg.scheduler_config, cfg.compilation_config
    out = {k: getattr(sched, k, None) for k in ("max_num_batched_tokens", "max_num_seqs", "enable_chunked_prefill")}
    out.update(compilation_mode=str(comp.mode), cudagraph_mode=str(comp.cudagraph_mode),
               max_cudagraph_capture_size=getattr(comp, "max_cudagraph_capture_size", None))  # fmt: skip
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    by_len = load_prompts(args.prompts)
    from smoke import vllm_environment  # bench/vllm_peer/smoke.py, beside this script

    vllm_environment()
    import vllm
    from vllm import LLM, SamplingParams, TokensPrompt

    eos = [int(x) for x in args.eos.split(",") if x.strip()]
    longest = max(len(p) for ps in by_len.values() for p in ps) + args.max_tokens
    t0 = time.perf_counter()
    llm = LLM(**llm_kwargs(args, longest))
    load_s = time.perf_counter() - t0
    sp = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, stop_token_ids=eos or None, detokenize=False)
    rows = {}
    for T, prompts in by_len.items():
        batch = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        for _ in range(args.warmup):  # the timed call's own shapes (prefill chunks, mixed steps), as ours warms up
            llm.generate(batch, sp, use_tqdm=False)
        if args.enable_prefix_caching:
            llm.reset_prefix_cache()
        t0 = time.perf_counter()
        outs = llm.generate(batch, sp, use_tqdm=False)
        dt = time.perf_counter() - t0
        gen = [[t for t in o.outputs[0].token_ids if t not in eos] for o in outs]
        rows[str(T)] = {"status": "ok", "samples_per_s": len(prompts) / dt, "generate_s": dt, "generated": gen,
                        "generated_tokens_mean": sum(map(len, gen)) / len(gen)}  # fmt: skip
        print(f"T={T}: {len(prompts) / dt:.3f} samples/s", file=sys.stderr, flush=True)
    meta = {"vllm": vllm.__version__, "load_s": load_s, "llm_kwargs": llm_kwargs(args, longest),
            "engine": engine_settings(llm)}  # fmt: skip
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
