"""vLLM smoke test: load a local HF checkpoint with vllm.LLM and decode a few prompts greedily.

    PYTHONPATH=/tmp/vsite python3 bench/vllm_peer/smoke.py MODEL_DIR [--enforce-eager] [--max-tokens 16]
        [--max-model-len 4096] [--dtype auto] [--attention-backend TRITON_ATTN] [--prompt TEXT ...]
        [--out $OUT/vllm_smoke.json] [--against-longctx]

Prints, per prompt, the prompt token ids and the generated token ids and text, and writes them to
--out as JSON, so a later run of our backend (or transformers) on the same prompts can be compared
token by token. Greedy (temperature 0), no stop strings, `ignore_eos` so every prompt yields exactly
--max-tokens tokens. Prompts are tokenized here with the checkpoint's own tokenizer (transformers)
and handed to vLLM as TokensPrompt, as lm-eval's vllm model does, so both sides see the same ids.

--against-longctx: then decode the same prompt ids greedily with longctx's own model (HybridLM, same
dtype, same GPU, our greedy_generate) and report how far the two agree: prompts whose first generated
token is the same, prompts whose whole continuation is, and where each pair first differs (exit 1 when
a first token differs). Needs fla beside vLLM (PYTHONPATH=/tmp/vsite:/tmp/site:$PWD, install.sh).

--enforce-eager skips CUDA graph capture and torch.compile (start-up in seconds instead of
minutes; decode slower). Needs a GPU; see bench/vllm_peer/install.sh for the install recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROMPTS = (
    "The capital of France is",
    "One, two, three, four, five,",
    "def fibonacci(n):",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="local HF checkpoint folder (config.json, *.safetensors, tokenizer)")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / torch.compile")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens to generate per prompt (default 16)")
    p.add_argument("--max-model-len", type=int, default=4096, help="vLLM max_model_len (default 4096)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"))
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument(
        "--attention-backend",
        default=None,
        help="vLLM attention backend, e.g. FLASH_ATTN or TRITON_ATTN (default: vLLM's choice, FA3 on Hopper)",
    )
    p.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable; default: 3 built-in)")
    p.add_argument("--out", default=None, help="JSON to write (default: $OUT/vllm_smoke.json when $OUT is set)")
    p.add_argument(
        "--against-longctx",
        action="store_true",
        help="also decode with longctx's HybridLM and report token agreement (exit 1 if a first token differs)",
    )
    args = p.parse_args(argv)
    if not (Path(args.model) / "config.json").is_file():
        p.error(f"model {args.model!r} has no config.json; give a local HF checkpoint folder")
    if args.max_tokens < 1:
        p.error(f"--max-tokens {args.max_tokens}: give a positive integer")
    return args


def llm_kwargs(args: argparse.Namespace) -> dict:
    """The vllm.LLM arguments (kept apart so a CPU test can check them against vLLM's signature)."""
    return {
        "model": str(Path(args.model).resolve()),
        "dtype": args.dtype,
        "max_model_len": args.max_model_len,
        "enforce_eager": args.enforce_eager,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "seed": 0,
        **({"attention_config": {"backend": args.attention_backend}} if args.attention_backend else {}),
    }


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> dict:
    """How two greedy decodings of the same prompts agree: prompts with the same first token, with the same
    whole continuation, and the index of each pair's first differing token (None where they agree)."""
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} against {len(theirs)} continuations")
    first_diff = []
    for a, b in zip(ours, theirs, strict=True):
        d = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        first_diff.append(d if d is not None or len(a) == len(b) else min(len(a), len(b)))
    return {
        "prompts": len(ours),
        "first_token_equal": sum(d != 0 for d in first_diff),
        "all_tokens_equal": sum(d is None for d in first_diff),
        "first_difference": first_diff,
    }


def longctx_greedy(model_dir: str, ids: list[list[int]], max_tokens: int, dtype: str) -> list[list[int]]:
    """The same prompts decoded by longctx's HybridLM (greedy_generate, no EOS stop, as vLLM's ignore_eos)."""
    import torch

    from longctx.model import HybridLM
    from longctx.model.generate import greedy_generate

    dt = None if dtype == "auto" else getattr(torch, dtype)
    model = HybridLM.from_pretrained(model_dir, dtype=dt, device="cuda").eval()
    with torch.inference_mode():
        return greedy_generate(model, ids, max_tokens, cuda_graphs=True)


def vllm_environment() -> None:
    """What vLLM must find in the environment before it is imported, for our checkpoints and staged wheels."""
    import importlib.util

    os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")  # a short-trained checkpoint may be run longer
    if importlib.util.find_spec("flashinfer") is None:  # left out by bench/vllm_peer/fetch-wheels.sh
        os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")  # else vLLM's sampler imports it on CUDA
    from longctx.evaluate.vllm_compat import register

    register()  # vLLM 0.26 loads no Olmo Hybrid conv weights without it (longctx/evaluate/vllm_compat.py)


def main(argv=None) -> int:
    args = parse_args(argv)
    vllm_environment()
    t0 = time.time()
    import vllm
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams, TokensPrompt

    print(
        f"vllm {vllm.__version__} from {os.path.dirname(vllm.__file__)} (import {time.time() - t0:.1f} s)", flush=True
    )
    tok = AutoTokenizer.from_pretrained(args.model)
    prompts = args.prompt or list(PROMPTS)
    ids = [tok(p)["input_ids"] for p in prompts]
    t0 = time.time()
    llm = LLM(**llm_kwargs(args))
    t_load = time.time() - t0
    sp = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    t0 = time.time()
    outs = llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], sp, use_tqdm=False)
    t_gen = time.time() - t0
    rows = []
    for p, i, o in zip(prompts, ids, outs, strict=True):
        c = o.outputs[0]
        rows.append({"prompt": p, "prompt_ids": i, "ids": list(c.token_ids), "text": c.text})
        print(f"{p!r}\n  prompt ids {i}\n  generated  {list(c.token_ids)}\n  text       {c.text!r}", flush=True)
    print(f"LLM() {t_load:.1f} s, generate {t_gen:.2f} s", flush=True)
    agree = None
    if args.against_longctx:
        ours = longctx_greedy(args.model, ids, args.max_tokens, args.dtype)
        agree = agreement(ours, [r["ids"] for r in rows])
        for r, o in zip(rows, ours, strict=True):
            r["longctx_ids"] = o
        print(f"against longctx: first tokens equal {agree['first_token_equal']}/{agree['prompts']}, "
              f"whole continuations {agree['all_tokens_equal']}/{agree['prompts']}, "
              f"first differences {agree['first_difference']}", flush=True)  # fmt: skip
    out = args.out or (os.path.join(os.environ["OUT"], "vllm_smoke.json") if os.environ.get("OUT") else None)
    if out:
        res = {"model": args.model, "vllm": vllm.__version__, "enforce_eager": args.enforce_eager,
               "dtype": args.dtype, "max_tokens": args.max_tokens, "load_s": t_load, "generate_s": t_gen,
               "samples": rows, **({"against_longctx": agree} if agree else {})}  # fmt: skip
        Path(out).write_text(json.dumps(res, indent=1))
        print(f"wrote {out}")
    return 1 if agree and agree["first_token_equal"] < agree["prompts"] else 0


if __name__ == "__main__":
    sys.exit(main())
