"""`longctx pretrain`: train a model from scratch at a base context length.

    longctx pretrain --config configs/models/hybrid-tiny.yaml --seq-len 512 --steps 200 --out runs/base

Everything is checked (config, numbers, OUT, the data) before OUT is created. OUT gets the HF
model (loadable by transformers and `lm_eval --model hf`), longctx_train.json (the base length
that `longctx extend` reads), run_config.yaml, metrics.jsonl and checkpoints/.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from longctx import __version__
from longctx.config import RunConfig, from_dict, resolve_steps
from longctx.errors import UsageError
from longctx.train import checkpoint as ckpt
from longctx.train.cli_args import add_training_arguments, config_from_args
from longctx.train.data import check_data, data_prefetch, loader_factory
from longctx.train.probe import build_probe
from longctx.train.export import export_hf, parse_dtype
from longctx.train.loop import NonFiniteLoss, Preempted, Stage, Trainer, resolve_device
from longctx.train.outdir import check_out, read_run_config, write_run_config
from longctx.train.resume_check import check_resume
from longctx.train.rundir import RunDir, open_run_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="NAME_OR_YAML",
                   help="model config: a name in configs/models (e.g. hybrid-tiny) or a model YAML/JSON")
    add_training_arguments(p)


def check_device(name: str | None) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available; accepted here: cpu")
    return device


def model_config(cfg: RunConfig, tokenizer):
    """The HF config to train: the named/inline model with the tokenizer's vocabulary (its size
    rounded up to a multiple of 128) and special ids, and the training length as
    max_position_embeddings."""
    from longctx.model import available_configs, config_from_dict, load_config

    if cfg.model is None:
        raise UsageError(f"no model given: pass --model NAME or a config with model:; names: {', '.join(available_configs())}")
    over = {
        "vocab_size": -(-len(tokenizer) // 128) * 128,
        "max_position_embeddings": cfg.seq_len,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    mc = config_from_dict(dict(cfg.model), **over) if isinstance(cfg.model, dict) else load_config(cfg.model, **over)
    return mc


def checkpoint_writer(model, tokenizer):
    """What each checkpoint carries besides the weights, so `longctx export` can rebuild the model."""
    from longctx.model.hf import export_config

    def write(d: Path) -> None:
        export_config(model).save_pretrained(str(d))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(d))

    return write


def resume_point(out: Path, resume: bool, force: bool, steps: int, *, run_config: dict, meta: dict,
                 prog: str) -> Path | None:
    """The checkpoint --resume continues from (None: a fresh run), once OUT and the flags are checked:
    a resumed run keeps its settings (longctx.train.resume_check). Writes nothing."""
    found = check_out(out, resume=resume, force=force)
    if resume:
        for note in check_resume(out, found, run_config, meta):
            if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 speaks
                print(f"{prog}: --resume: {note} (applied; recorded in run_config.yaml)", file=sys.stderr)
    if found is not None:
        done = ckpt.read_meta(found)["step"]
        if done > steps:
            raise UsageError(f"--steps {steps} is below the step of the checkpoint to resume ({done}, {found})")
    return found


def check_memory(stages, mconfig, device, *, flags: str,
                 hint: str = "lower --batch-size (--grad-accum keeps the tokens per step)") -> None:
    """Refuse a micro-batch whose activations cannot fit before a batch is made (longctx.memory)."""
    from longctx.memory import check_fits, model_width, world_size

    hidden, layers = model_width(mconfig)
    for st in stages:
        check_fits(st.batch_size * st.seq_len, hidden * layers, device, ranks=world_size(),
                   what=f"{flags.format(batch=st.batch_size, seq_len=st.seq_len)} per micro-batch ({st.name})",
                   hint=hint)


def _out_of_memory(e: BaseException) -> bool:
    import torch

    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e)))


def train_and_export(trainer: Trainer, run: RunDir, *, prog: str, tokenizer, train_meta: dict, dtype,
                     temperature=None) -> int:
    """Train, then export the HF model. `temperature` (longctx.train.temperature.DropeTemperature):
    resolved (fitted) on every rank after training, folded into the exported weights only."""
    main, out = trainer.parallel.is_main, run.out
    fresh = run.resume_from is None
    try:
        trainer.fit()
    except NonFiniteLoss as e:
        if main:
            print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except Preempted as e:  # every rank stopped at the same step and wrote its shard
        if main:
            print(f"{prog}: {e}", file=sys.stderr)
        _leave_process_group(trainer)
        return 128 + e.signum
    except KeyboardInterrupt:
        if main:
            last = trainer.last_checkpoint or run.resume_from
            where = (f"the last checkpoint is {last}" if last is not None
                     else "no checkpoint was written yet (--resume starts it over)")
            print(f"{prog}: interrupted after step {trainer.step}; {where}; rerun the same command with --resume "
                  "to continue", file=sys.stderr)
        raise
    except Exception as e:
        nothing_kept = fresh and trainer.last_checkpoint is None
        if nothing_kept:
            run.discard()  # a half-written run is worse than none
        if not _out_of_memory(e):
            raise
        if main:
            stage = trainer.stages[trainer.stage_index(trainer.step)]
            left = f"; {out} was removed" if nothing_kept and not out.exists() else (
                "; nothing of the run was kept" if nothing_kept else "")
            print(f"{prog}: error: out of memory in step {trainer.step + 1} ({stage.batch_size} x {stage.seq_len} "
                  f"tokens per micro-batch): lower --batch-size (--grad-accum keeps the tokens per step){left}",
                  file=sys.stderr)
        return 1
    meta = {**train_meta, "steps": trainer.step, "tokens": trainer.tokens}
    best = trainer.load_best()  # checkpoint.export: best
    if best is not None:
        meta["exported"] = {"checkpoint": "best", **best}
    record = temperature.resolve(trainer) if temperature is not None else None
    model = trainer.export_model()  # every rank: gathers the shards under torchrun
    if main:
        if record is not None:
            temperature.fold(model, record)
            meta["temperature"] = record
            temperature.write(out, record)
            print(f"{prog}: {temperature.describe(record)}", file=sys.stderr)
        export_hf(model, out, tokenizer=tokenizer, train_meta=meta, dtype=dtype)
        which = f" (the best {best['key']} = {best['value']}, step {best['step']})" if best is not None else ""
        print(f"{prog}: {trainer.step} steps, {trainer.tokens} tokens; model{which} saved to {out}")
    _leave_process_group(trainer)
    return 0


def _leave_process_group(trainer: Trainer) -> None:
    if trainer.parallel.distributed:
        from longctx.distributed import destroy_distributed

        trainer.parallel.barrier()
        destroy_distributed()


def start_parallel(args: argparse.Namespace, stages, mconfig, device: torch.device):
    """Check --dp/--cp against the processes and every stage, join torchrun's process group, and
    return (ParallelDims, this rank's device). A single process gets (ParallelDims(), device)."""
    from longctx.distributed import parallel_from_args

    dims = parallel_from_args(args, stages, mconfig, device.type)
    return dims, dims.device if dims.distributed else device


def pretrain_stages(cfg, steps: int) -> list[Stage]:
    """The curriculum's shorter stages (in the order given, each its fraction of the steps, with the
    batch scaled to the same tokens per step), then the main stage at seq_len with the rest."""
    stages, used = [], 0
    for st in cfg.curriculum:
        n = max(1, round(st.fraction * steps))
        stages.append(Stage(f"pretrain@{st.seq_len}", st.seq_len, max(1, cfg.batch_size * cfg.seq_len // st.seq_len), n))
        used += n
    if steps - used < 1:
        raise UsageError(f"a budget of {steps} steps leaves nothing for the main stage after the curriculum "
                         f"({used} steps); give more steps or smaller fractions")
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
    train_meta = {"kind": "pretrain", "seq_len": cfg.seq_len, "model": cfg.model,
                  "rope_parameters": mconfig.rope_parameters, "longctx_version": __version__}
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
        return run_training(model, cfg, run, stages, make_loader, prog=prog, device=device, train_meta=train_meta,
                            tokenizer=tokenizer, dims=dims, probe=probe, dtype=dtype, progress=not args.no_progress)
    finally:
        run.release()


def run_training(model, cfg, run: RunDir, stages, make_loader, *, prog: str, device, train_meta: dict, tokenizer,
                 dims, probe, dtype, progress: bool, temperature=None) -> int:
    """The Trainer over the stages (resumed from run.resume_from when set), then the HF export; the exit code."""
    trainer = Trainer(model, cfg, run.out, stages, make_loader, device=device, meta=train_meta,
                      write_extra=checkpoint_writer(model, tokenizer), show_progress=progress,
                      parallel=dims, probe=probe)
    if run.resume_from is not None:
        try:
            trainer.resume(run.resume_from)
        except Exception as e:  # noqa: BLE001 -- a damaged checkpoint or one of another model
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UsageError(f"--resume: cannot load {run.resume_from} ({type(e).__name__}: {first})") from None
        if dims.is_main:
            print(f"{prog}: resuming from {run.resume_from} (step {trainer.step} of {trainer.total_steps})", file=sys.stderr)
    if dims.is_main:
        write_run_config(run.out, cfg.to_dict())  # a resumed run records the changes it applied
    return train_and_export(trainer, run, prog=prog, tokenizer=tokenizer, train_meta=train_meta, dtype=dtype,
                            temperature=temperature)
