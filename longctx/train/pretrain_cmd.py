"""`longctx pretrain`: train a model from scratch at a base context length.

    longctx pretrain --config configs/models/hybrid-tiny.yaml --seq-len 512 --steps 200 --out runs/base

Everything is checked (config, numbers, OUT, the data) before OUT is created. OUT gets the HF
model (loadable by transformers and `lm_eval --model hf`), longctx_train.json (the base length
that `longctx extend` reads), run_config.yaml, metrics.jsonl and checkpoints/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from longctx import __version__
from longctx.config import RunConfig, from_dict, resolve_steps
from longctx.errors import UsageError
from longctx.train.cli_args import add_training_arguments, config_from_args
from longctx.train.data import check_data, data_prefetch, loader_factory
from longctx.train.export import parse_dtype
from longctx.train.loop import Stage
from longctx.train.outdir import read_run_config
from longctx.train.probe import build_probe
from longctx.train.rundir import open_run_dir
from longctx.train.runs import check_device, check_memory, resume_point, run_training, start_parallel


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        metavar="NAME_OR_YAML",
        help="model config: a name in configs/models (e.g. hybrid-tiny) or a model YAML/JSON",
    )
    add_training_arguments(p)


def model_config(cfg: RunConfig, tokenizer):
    """The HF config to train: the named/inline model with the tokenizer's vocabulary (its size
    rounded up to a multiple of 128) and special ids, and the training length as
    max_position_embeddings."""
    from longctx.model import available_configs, config_from_dict, load_config

    if cfg.model is None:
        raise UsageError(
            f"no model given: pass --model NAME or a config with model:; names: {', '.join(available_configs())}"
        )
    over = {
        "vocab_size": -(-len(tokenizer) // 128) * 128,
        "max_position_embeddings": cfg.seq_len,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    mc = config_from_dict(dict(cfg.model), **over) if isinstance(cfg.model, dict) else load_config(cfg.model, **over)
    return mc


def pretrain_stages(cfg, steps: int) -> list[Stage]:
    """The curriculum's shorter stages (in the order given, each its fraction of the steps, with the
    batch scaled to the same tokens per step), then the main stage at seq_len with the rest."""
    stages, used = [], 0
    for st in cfg.curriculum:
        n = max(1, round(st.fraction * steps))
        stages.append(
            Stage(f"pretrain@{st.seq_len}", st.seq_len, max(1, cfg.batch_size * cfg.seq_len // st.seq_len), n)
        )
        used += n
    if steps - used < 1:
        raise UsageError(
            f"a budget of {steps} steps leaves nothing for the main stage after the curriculum "
            f"({used} steps); give more steps or smaller fractions"
        )
    return stages + [Stage("pretrain", cfg.seq_len, cfg.batch_size, steps - used)]


def run(args: argparse.Namespace) -> int:
    from longctx.data import load_tokenizer
    from longctx.distributed import build_on_rank0
    from longctx.model import HybridLM

    out = Path(args.out)
    base = None
    if args.resume and args.config is None and (saved := read_run_config(out)) is not None:
        base = from_dict(saved)  # the run's own config; flags still override
    cfg = config_from_args(args, base)
    if args.model is not None:
        cfg.model = args.model
    device = check_device(cfg.device)
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    mconfig = model_config(cfg, tokenizer)
    steps = resolve_steps(cfg)
    dtype = parse_dtype(cfg.export_dtype)
    stages = pretrain_stages(cfg, steps)
    train_meta = {
        "kind": "pretrain",
        "seq_len": cfg.seq_len,
        "model": cfg.model,
        "rope_parameters": mconfig.rope_parameters,
        "longctx_version": __version__,
    }
    prog = "longctx pretrain"
    resume_point(out, args.resume, args.force, steps, run_config=cfg.to_dict(), meta=train_meta, prog=prog)
    check_memory(stages, mconfig, device, flags="--batch-size {batch} x --seq-len {seq_len}")
    make_loader = loader_factory(cfg, tokenizer, **data_prefetch(device))
    for stage in stages:
        check_data(make_loader, stage)
    probe = build_probe(cfg, tokenizer)
    dims, device = start_parallel(args, stages, mconfig, device)
    torch.manual_seed(cfg.seed)
    model = build_on_rank0(lambda: HybridLM(mconfig), dims)  # under torchrun rank 0's init is broadcast

    # Validated: from here on OUT is written.
    run = open_run_dir(dims, out, resume=args.resume, force=args.force, run_config=cfg.to_dict(), prog=prog)
    try:
        return run_training(
            model,
            cfg,
            run,
            stages,
            make_loader,
            prog=prog,
            device=device,
            train_meta=train_meta,
            tokenizer=tokenizer,
            dims=dims,
            probe=probe,
            dtype=dtype,
            progress=not args.no_progress,
        )
    finally:
        run.release()
