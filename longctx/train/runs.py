"""What `longctx pretrain` and `longctx extend` share around the Trainer: the device and memory checks, the
--resume point, joining the process group, and training then exporting the HF model."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from longctx.errors import UsageError
from longctx.train import checkpoint as ckpt
from longctx.train.export import export_hf
from longctx.train.loop import NonFiniteLoss, Preempted, Trainer, resolve_device
from longctx.train.outdir import check_out, write_run_config
from longctx.train.resume_check import check_resume
from longctx.train.rundir import RunDir


def check_device(name: str | None) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available; accepted here: cpu")
    return device


def checkpoint_writer(model, tokenizer):
    """What each checkpoint carries besides the weights, so `longctx export` can rebuild the model."""
    from longctx.model.hf import export_config

    def write(d: Path) -> None:
        export_config(model).save_pretrained(str(d))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(d))

    return write


def resume_point(
    out: Path, resume: bool, force: bool, steps: int, *, run_config: dict, meta: dict, prog: str
) -> Path | None:
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


def check_memory(
    stages, mconfig, device, *, flags: str, hint: str = "lower --batch-size (--grad-accum keeps the tokens per step)"
) -> None:
    """Refuse a micro-batch whose activations cannot fit before a batch is made (longctx.memory)."""
    from longctx.memory import check_fits, model_width, world_size

    hidden, layers = model_width(mconfig)
    for st in stages:
        check_fits(
            st.batch_size * st.seq_len,
            hidden * layers,
            device,
            ranks=world_size(),
            what=f"{flags.format(batch=st.batch_size, seq_len=st.seq_len)} per micro-batch ({st.name})",
            hint=hint,
        )


def _out_of_memory(e: BaseException) -> bool:
    import torch

    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e))
    )


def train_and_export(
    trainer: Trainer, run: RunDir, *, prog: str, tokenizer, train_meta: dict, dtype, temperature=None
) -> int:
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
            where = (
                f"the last checkpoint is {last}"
                if last is not None
                else "no checkpoint was written yet (--resume starts it over)"
            )
            print(
                f"{prog}: interrupted after step {trainer.step}; {where}; rerun the same command with --resume "
                "to continue",
                file=sys.stderr,
            )
        raise
    except Exception as e:
        nothing_kept = fresh and trainer.last_checkpoint is None
        if nothing_kept:
            run.discard()  # a half-written run is worse than none
        if not _out_of_memory(e):
            raise
        if main:
            stage = trainer.stages[trainer.stage_index(trainer.step)]
            left = (
                f"; {out} was removed"
                if nothing_kept and not out.exists()
                else ("; nothing of the run was kept" if nothing_kept else "")
            )
            print(
                f"{prog}: error: out of memory in step {trainer.step + 1} ({stage.batch_size} x {stage.seq_len} "
                f"tokens per micro-batch): lower --batch-size (--grad-accum keeps the tokens per step){left}",
                file=sys.stderr,
            )
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


def run_training(
    model,
    cfg,
    run: RunDir,
    stages,
    make_loader,
    *,
    prog: str,
    device,
    train_meta: dict,
    tokenizer,
    dims,
    probe,
    dtype,
    progress: bool,
    temperature=None,
) -> int:
    """The Trainer over the stages (resumed from run.resume_from when set), then the HF export; the exit code."""
    trainer = Trainer(
        model,
        cfg,
        run.out,
        stages,
        make_loader,
        device=device,
        meta=train_meta,
        write_extra=checkpoint_writer(model, tokenizer),
        show_progress=progress,
        parallel=dims,
        probe=probe,
    )
    if run.resume_from is not None:
        try:
            trainer.resume(run.resume_from)
        except Exception as e:  # noqa: BLE001 -- a damaged checkpoint or one of another model
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UsageError(f"--resume: cannot load {run.resume_from} ({type(e).__name__}: {first})") from None
        if dims.is_main:
            print(
                f"{prog}: resuming from {run.resume_from} (step {trainer.step} of {trainer.total_steps})",
                file=sys.stderr,
            )
    if dims.is_main:
        write_run_config(run.out, cfg.to_dict())  # a resumed run records the changes it applied
    return train_and_export(
        trainer, run, prog=prog, tokenizer=tokenizer, train_meta=train_meta, dtype=dtype, temperature=temperature
    )
