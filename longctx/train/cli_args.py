"""Flags shared by `longctx pretrain` and `longctx extend`, and how they map onto RunConfig keys."""

from __future__ import annotations

import argparse

from longctx.config import SCHEDULES, RunConfig, apply_overrides, load_run_config, parse_set, validate

# flag dest -> dotted RunConfig key
_KEYS = {
    "steps": "steps",
    "tokens": "tokens",
    "seq_len": "seq_len",
    "batch_size": "batch_size",
    "grad_accum": "grad_accum",
    "lr": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "grad_clip": "optimizer.grad_clip",
    "schedule": "schedule.name",
    "warmup_steps": "schedule.warmup_steps",
    "z_loss": "z_loss",
    "checkpoint_interval": "checkpoint.interval",
    "keep_checkpoints": "checkpoint.keep",
    "seed": "seed",
    "device": "device",
    "data": "data.source",
    "grad_checkpointing": "grad_checkpointing",
    "probe_interval": "probe.interval",
}


def add_training_arguments(p: argparse.ArgumentParser, *, seq_len: bool = True) -> None:
    p.add_argument("--config", metavar="YAML", help="run config (or a model config) YAML; flags override it")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory: HF model, metrics.jsonl, checkpoints/")
    budget = p.add_mutually_exclusive_group()
    # strings, so that the config layer reports bad values in its one-line form (and 2e9 works)
    budget.add_argument("--steps", help="total optimizer steps of the run (with --resume: continue up to it)")
    budget.add_argument("--tokens", help="total training tokens (e.g. 2e9) instead of --steps")
    if seq_len:
        p.add_argument("--seq-len", help="tokens per sequence")
    p.add_argument("--batch-size", help="sequences per micro-batch")
    p.add_argument("--grad-accum", help="micro-batches per optimizer step")
    p.add_argument("--lr", help="peak learning rate")
    p.add_argument("--weight-decay", help="AdamW weight decay")
    p.add_argument("--grad-clip", help="max gradient norm (0 = off)")
    p.add_argument("--schedule", help=f"LR schedule after warmup: {', '.join(SCHEDULES)}")
    p.add_argument("--warmup-steps", help="linear warmup steps")
    p.add_argument("--z-loss", help="z-loss coefficient (0 = off)")
    p.add_argument("--checkpoint-interval", help="steps between checkpoints (0 = only at the end)")
    p.add_argument("--keep-checkpoints", help="how many of the newest checkpoints to keep")
    p.add_argument("--seed", help="random seed (model init, data order)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--data", metavar="SOURCE", help="training data (default: the embedded corpus)")
    p.add_argument(
        "--grad-checkpointing",
        nargs="?",
        const=True,
        default=None,
        metavar="FRACTION",
        help="activation checkpointing of every block, or of this fraction of them (GDN blocks "
        "first: their recomputation is cheapest), e.g. 0.75",
    )
    p.add_argument(
        "--probe-interval",
        help="steps between in-training RULER needle probes, logged to "
        "metrics.jsonl as probe/* (0 = off; lengths/tasks/samples via --set probe.*)",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key, e.g. schedule.min_lr_ratio=0")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (metrics.jsonl is still written)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    mode.add_argument("--force", action="store_true", help="delete the run in --out and start over")
    from longctx.distributed import add_parallel_arguments

    add_parallel_arguments(p)


def overrides(args: argparse.Namespace) -> dict:
    out = {key: getattr(args, dest, None) for dest, key in _KEYS.items()}
    out.update(parse_set(getattr(args, "set", None)))
    return out


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    cfg = base if base is not None else load_run_config(args.config)
    cfg = apply_overrides(cfg, overrides(args))
    # a budget flag replaces the config's budget of the other kind
    if getattr(args, "steps", None) is not None:
        cfg.tokens = None
    if getattr(args, "tokens", None) is not None:
        cfg.steps = None
    validate(cfg)
    return cfg
