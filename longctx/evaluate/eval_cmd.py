"""`longctx eval`: RULER at several context lengths through lm-evaluation-harness -> results JSON.

    longctx eval --model runs/drope-64k --lengths 4k,8k,16k,32k,64k --out runs/drope-64k/ruler.json

Backends: `longctx` (our lm-eval adapter, default), `hf` (lm-eval's HF model, `pretrained=DIR`),
`vllm` (lm-eval's vLLM model; vLLM 0.26 serves OlmoHybridForCausalLM and loads our exports with the loader
fix longctx registers; on an H100, RULER on a trained hybrid gave the same answer text as `--backend longctx` on
150 of 150 samples (docs/benchmarks.md, "Against vLLM"); offline install: bench/vllm_peer/install.sh;
`--dtype auto` there turns float32 weights into bfloat16, unlike hf/longctx). Resumable: answers go to
`<out>.partial.jsonl` as they are produced; rerunning the same command skips finished samples and (task, length)
cells; the journal is kept after success (delete it to recompute; one made with another model, backend,
weights or data option is refused). `--finished-only` writes the results of the cells such a journal
finished without loading the model (an evaluation cut short by a time limit, its weights perhaps gone);
the other cells are recorded as not finished, and the other flags must be the evaluation's own.
Tasks whose data cannot be had offline (the QA sets) are recorded as unavailable, not as 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from longctx.errors import UsageError
from longctx.evaluate import vllm_rope
from longctx.evaluate.runner import BACKENDS, CONTEXT_MARGIN, HAYSTACKS, EvalSpec
from longctx.lengths import parse_lengths
from longctx.model import prefix
from longctx.paths import check_output
from longctx.report import markdown_table
from longctx.results import RULER_TASKS, parse_tasks, unfinished

DTYPES = ("auto", "bfloat16", "float16", "float32")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("\n", 1)[1]
    p.add_argument("--model", required=True, metavar="DIR", help="HF model directory (config.json, weights, tokenizer)")
    p.add_argument("--lengths", required=True, help="comma-separated context lengths, e.g. 4k,8k,16k,32k,64k")
    p.add_argument("--out", required=True, metavar="FILE.json", help="results JSON to write")
    p.add_argument("--tasks", default="all",
                   help=f"comma-separated RULER tasks or 'all' (default); names: {', '.join(RULER_TASKS)} "
                        "(the 'ruler_' prefix may be left out)")  # fmt: skip
    p.add_argument("--samples", type=int, default=100, help="samples per task and length (default 100; RULER uses 500)")
    p.add_argument("--backend", default="longctx", choices=BACKENDS,
                   help="lm-eval model: longctx (default), hf, vllm (needs vLLM and a GPU)")  # fmt: skip
    p.add_argument("--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--batch-size", default=None,
                   help="requests per batch, or 'auto' (the default; longctx: as many as the decode caches of each "
                   "length fit in the device's memory, at most 64; hf's default: 1)")  # fmt: skip
    p.add_argument(
        "--share-prefixes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--backend longctx: prefill the prefixes a batch's prompts share (the haystack before each needle) "
        "once, forking the caches (default: longctx.model.prefix.DEFAULT_ON, off until timed faster across the "
        "tasks on a GPU); --backend vllm: vLLM's prefix caching (off by default in vLLM 0.26 for hybrid models; "
        "1.35x samples/s on one batch of RULER prompts at 16k, H200)",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="weights dtype (default: as stored)")
    p.add_argument("--label", default=None, help="row label for `longctx compare` (default: model dir + method)")
    p.add_argument("--haystack", default="auto", choices=HAYSTACKS,
                   help="essay haystack: auto (Paul Graham essays if reachable, else the bundled text), "
                        "paul_graham, bundled")  # fmt: skip
    p.add_argument("--haystack-dir", default=None, metavar="DIR", help="essay haystack from local .txt files instead")
    p.add_argument("--seed", type=int, default=42, help="sample generation seed (default 42)")
    p.add_argument(
        "--temperature-per-length",
        action="store_true",
        help="a DRoPE model with a folded temperature: beta = 1 + c ln(L / base) at each length L "
        "(1 up to the base length) instead of the one folded for its target; backends longctx and hf",
    )
    p.add_argument(
        "--finished-only",
        action="store_true",
        help="write the results of the cells the journal beside --out finished, without loading the model "
        "(the rest: not finished); give the evaluation's own flags",
    )


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    cfg = model_dir / "tokenizer_config.json"
    return cfg.is_file() and bool(json.loads(cfg.read_text()).get("chat_template"))


def spec_from_args(args: argparse.Namespace) -> EvalSpec:
    """Check every flag before anything is loaded or written."""
    lengths = parse_lengths(args.lengths, "--lengths")
    tasks = parse_tasks(args.tasks)
    model = Path(args.model)
    if not model.is_dir():
        raise UsageError(f"--model {args.model!r} is not a directory; give an HF model folder")
    if not (model / "config.json").is_file():
        raise UsageError(f"--model {args.model!r} has no config.json; give an HF model folder")
    try:
        json.loads((model / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"--model {args.model!r}: config.json is not valid JSON ({e})") from None
    if not any((model / f).is_file() for f in TOKENIZER_FILES):
        raise UsageError(f"--model {args.model!r} has no tokenizer ({', '.join(TOKENIZER_FILES)})")
    if not args.finished_only and not any(model.glob("*.safetensors")) and not any(model.glob("*.bin")):
        raise UsageError(f"--model {args.model!r} has no weights (*.safetensors or *.bin)")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed {args.seed}: give an integer in [0, 2**32)")
    if args.samples < 1:
        raise UsageError(f"--samples {args.samples} must be a positive integer")
    bs = args.batch_size
    if bs is not None and bs != "auto":
        if not str(bs).isdigit() or int(bs) < 1:
            raise UsageError(f"--batch-size {bs!r}: give a positive integer or 'auto'")
        bs = int(bs)
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise UsageError(f"--out {args.out!r}: the results file must end in .json")
    if out.is_dir():
        raise UsageError(f"--out {args.out!r} is a directory; give a FILE.json path")
    check_output(out, "--out", kind="file")
    if args.chat_template and not _has_chat_template(model):
        raise UsageError(f"--chat-template: the tokenizer in {args.model!r} has no chat template")
    if args.share_prefixes and args.backend == "hf":
        raise UsageError("--share-prefixes: --backend longctx (a shared prefill) or vllm (its prefix cache)")
    if args.temperature_per_length and args.backend == "vllm":
        raise UsageError("--temperature-per-length sets the weights per length: use --backend longctx or hf")
    if args.backend == "vllm" and not args.finished_only:  # a RoPE table too short for the lengths: refused here
        vllm_rope.hf_overrides(model, max(lengths) + CONTEXT_MARGIN, max(lengths))
    if args.backend == "vllm" and not args.finished_only and importlib.util.find_spec("vllm") is None:
        raise UsageError(
            "--backend vllm needs vLLM (pip install 'longctx[vllm]' on a GPU machine; offline: "
            "bench/vllm_peer/install.sh)"
        )
    if args.haystack_dir is not None and not Path(args.haystack_dir).exists():
        raise UsageError(f"--haystack-dir {args.haystack_dir!r} does not exist; give a folder of .txt files or a file")
    if args.device and not (args.device in ("cpu", "cuda", "mps") or args.device.startswith("cuda:")):
        raise UsageError(f"--device {args.device!r}; use cpu, cuda or cuda:N")
    spec = EvalSpec(
        model=args.model, lengths=lengths, tasks=tasks, samples=args.samples, out=out,
        backend=args.backend, chat_template=args.chat_template, batch_size=bs,
        device=args.device, dtype=args.dtype, label=args.label,
        haystack=args.haystack, haystack_dir=args.haystack_dir, seed=args.seed,
        temperature_per_length=args.temperature_per_length, finished_only=args.finished_only,
        share_prefixes=prefix.DEFAULT_ON if args.share_prefixes is None else args.share_prefixes,
    )  # fmt: skip
    if spec.temperature_per_length:
        from longctx.evaluate.runner import temperature_record

        temperature_record(spec)  # one line before anything runs when the model has none
    return spec


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    from longctx.distributed.mesh import world_from_env
    from longctx.evaluate import ranks as dp
    from longctx.evaluate.resume import Journal
    from longctx.evaluate.runner import evaluate_ruler, journal_fingerprint, journal_path

    rank, _, world = world_from_env()
    if world > 1 and spec.backend == "vllm":
        raise UsageError("--backend vllm under torchrun: run one process and give vLLM its own parallelism")
    if world > 1 and spec.finished_only and rank != 0:
        return 0  # nothing to generate: rank 0 reads the journal alone
    if rank != 0:  # rank 0 speaks for all: the others keep their warnings to themselves
        import logging

        logging.disable(logging.WARNING)
    # a journal of another run: refuse before loading (read-only: rank 0 is the one that writes)
    Journal(journal_path(spec.out), journal_fingerprint(spec), writable=rank == 0)
    if not spec.finished_only:
        from longctx.evaluate.model_check import check_lengths_fit, check_model

        spec.device = dp.device_for(spec.device)
        config = check_model(Path(spec.model), spec.backend, f"--model {spec.model}")
        check_lengths_fit(spec.lengths, config, spec.device)
    ranks = dp.from_env() if world > 1 and not spec.finished_only else None
    try:
        res = evaluate_ruler(spec, log=None if rank == 0 else (lambda s: None), ranks=ranks)
    except KeyboardInterrupt:
        print(f"answers so far are in {journal_path(spec.out)}; rerun the same command to resume", file=sys.stderr)
        raise
    finally:
        if ranks is not None:
            dp.close()
    if rank != 0:
        return 0
    print(markdown_table([res]), end="")
    gaps = [e for per in res["scores"].values() for e in per.values() if "unavailable" in e]
    n_open = sum(map(unfinished, gaps))
    n_unavail = len(gaps) - n_open
    said = [f"{n_unavail} task x length cells unavailable here"] if n_unavail else []
    said += [f"{n_open} not finished"] if n_open else []
    print(f"wrote {spec.out}" + (f" ({', '.join(said)})" if said else ""))
    return 0
