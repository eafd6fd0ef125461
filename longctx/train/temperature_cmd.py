"""`longctx temperature`: DRoPE's softmax temperature for a finished DRoPE run, without training again.

    longctx temperature --model runs/drope-64k --out runs/drope-64k-temp              # c fitted at the run's target
    longctx temperature --model runs/drope-64k --out runs/drope-128k-temp --target 131072 --c 0.4

beta = 1 + c ln(target / base_len) on the full-attention layers without RoPE, folded into their q_norm
weights (longctx.model.temperature), as `longctx extend --set extend.rope.temperature=...` does when its
training ends. The DroPE paper applies it at inference, so one trained DRoPE model serves every target
length and every c: this command writes a new HF model directory from the run's export. `--c auto`
(the default) fits c as extend does (longctx.train.temperature.fit_c), by `--fit`: `nll` (default,
the paper's) the mean next-token NLL of held-out sequences at --target drawn from the run's own data
(its run_config.yaml), `answer` the NLL of the answers of held-out key-value retrieval documents at
--target; with extend's held-out seed, so on the same run it tries the same values of c on the same
sequences.

--model must be the output of `longctx extend --method drope` without a temperature (its
longctx_train.json says so). The new directory's longctx_train.json is the run's with the temperature
record added (also in drope_temperature.json); a --target past the run's raises config.json's
max_position_embeddings to it.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch

from longctx.errors import UsageError
from longctx.lengths import parse_length
from longctx.train.export import DTYPES, export_hf, parse_dtype
from longctx.train.loss import heldout_ce
from longctx.train.outdir import RUN_CONFIG, TRAIN_META, check_new_out, read_train_meta
from rope_methods.drope import FIT_CHOICES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="a DRoPE run of `longctx extend` (its output dir)")
    p.add_argument("--out", required=True, metavar="DIR", help="HF model directory to write")
    p.add_argument(
        "--c",
        default="auto",
        metavar="auto|C",
        help="the temperature coefficient: auto (fit at --target, default) or a number > 0",
    )
    p.add_argument(
        "--fit",
        default="nll",
        choices=FIT_CHOICES,
        help="what --c auto minimises: nll (held-out next-token NLL, the paper's; default) or answer "
        "(the answer tokens' NLL of held-out key-value retrieval documents)",
    )
    p.add_argument(
        "--target",
        metavar="N",
        help="the length beta is for, > the run's base length (e.g. 131072 or 128k; default: the run's target)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--batch-size", type=int, metavar="N", help="held-out sequences per forward (default: the run's)")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="weights dtype of the export (default: float32)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    p.add_argument(
        "--resume", action="store_true", help="as --force (what `longctx study` passes to redo a stopped stage)"
    )


def _setting(text: str):
    if text == "auto":
        return "auto"
    try:
        c = float(text)
    except ValueError:
        c = float("nan")
    if not c > 0 or c == float("inf"):
        raise UsageError(f"--c {text!r}: give auto or a number > 0")
    return c


def check_run(model_dir: Path) -> dict:
    """The run's longctx_train.json, checked: a DRoPE extension without a temperature yet."""
    if not (model_dir / "config.json").is_file():
        raise UsageError(f"--model {model_dir}: no model there (no config.json); give a `longctx extend` output dir")
    meta = read_train_meta(model_dir, strict=False)
    if not meta or meta.get("kind") != "extend":
        raise UsageError(f"--model {model_dir}: not a `longctx extend` run (no {TRAIN_META} of one)")
    if meta.get("method") != "drope":
        raise UsageError(
            f"--model {model_dir}: a {meta.get('method')} run; the temperature is DRoPE's (--method drope)"
        )
    if meta.get("temperature") or (meta.get("rope_options") or {}).get("temperature") is not None:
        c = (meta.get("temperature") or {}).get("c", (meta.get("rope_options") or {}).get("temperature"))
        raise UsageError(f"--model {model_dir}: has a temperature already (c = {c}); give the run without one")
    return meta


def heldout_nll(model, batches: list[dict], loss_fn, device: torch.device) -> float:
    """Mean next-token NLL of `model` on loader batches, one process (Trainer.heldout_nll without ranks)."""
    ce_sum, count = heldout_ce(model, batches, loss_fn, device)
    return float(ce_sum) / max(count, 1)


def run(args: argparse.Namespace) -> int:
    from longctx.config import load_run_config
    from longctx.data import load_tokenizer
    from longctx.model import HybridLM
    from longctx.model.temperature import temperature_layers
    from longctx.train.lock import writing_into
    from longctx.train.loss import make_loss_fn
    from longctx.train.temperature import C_GRID, GOLDEN_STEPS, SHORT, DropeTemperature, fit_batches

    model_dir, out = Path(args.model), Path(args.out)
    meta = check_run(model_dir)
    setting = _setting(args.c)
    base_len = int(meta["base_len"])
    target = parse_length(args.target, "--target") if args.target is not None else int(meta["target"])
    if target <= base_len:
        raise UsageError(f"--target {args.target}: must exceed the run's base length {base_len}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: give a whole number >= 1")
    dtype = parse_dtype(args.dtype)
    if args.fit != "nll" and setting != "auto":
        raise UsageError(f"--fit {args.fit}: applies to --c auto, not to a fixed c ({args.c})")
    cfg = None
    if (model_dir / RUN_CONFIG).is_file():
        cfg = load_run_config(model_dir / RUN_CONFIG)
    elif setting == "auto" and args.fit == "nll":
        raise UsageError(
            f"--model {model_dir}: no {RUN_CONFIG} (the run's data, for --c auto); give --c C or --fit answer"
        )
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device here")
    check_new_out(out, force=args.force or args.resume)
    model = HybridLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    if not temperature_layers(model.config):
        raise UsageError(f"--model {model_dir}: every full-attention layer keeps RoPE; no layer takes a temperature")
    tokenizer = load_tokenizer(str(model_dir))
    batch_size = args.batch_size or (cfg.batch_size if cfg is not None else 1)
    temp = DropeTemperature(
        setting,
        base_len=base_len,
        target=target,
        fit=args.fit,
        heldout=lambda: fit_batches(args.fit, cfg, tokenizer, target, batch_size),
    )
    loss_fn = make_loss_fn("chunked", chunk=cfg.loss_chunk) if cfg is not None else make_loss_fn("chunked")
    tries = [0]

    def nll(batches):  # one value of c (the temperature is in the weights now): a progress line per try
        value = heldout_nll(model, batches, loss_fn, device)
        tries[0] += 1
        n = len(C_GRID) + GOLDEN_STEPS
        print(f"longctx temperature: fit {tries[0]}/{n}: held-out {SHORT[args.fit]} {value:.4f}", file=sys.stderr)
        return value

    fitter = types.SimpleNamespace(model=model, heldout_nll=nll)

    record = temp.resolve(fitter)
    model.to("cpu")
    DropeTemperature.fold(model, record)
    # the model is for --target now: tools that read the length limit (lm-eval's max_length, vLLM's
    # max_model_len) take it from here
    model.config.max_position_embeddings = max(int(model.config.max_position_embeddings or 0), target)
    train_meta = {
        **meta,
        "rope_options": {**(meta.get("rope_options") or {}), "temperature": setting},
        "temperature": {**record, "added_to": str(model_dir)},
    }
    train_meta.pop("export_files", None)
    with writing_into(out):
        export_hf(model, out, tokenizer=tokenizer, train_meta=train_meta, dtype=dtype)
        DropeTemperature.write(out, train_meta["temperature"])
    print(f"longctx temperature: {DropeTemperature.describe(record)}", file=sys.stderr)
    print(f"longctx temperature: {model_dir} with beta = {record['beta']:.4g} for {target} tokens saved to {out}")
    return 0
