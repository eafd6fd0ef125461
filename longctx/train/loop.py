"""The training loop: stages of (seq_len, batch, steps), one optimizer and LR schedule across them.

A run is a list of stages (pretraining: one; DRoPE extension: recalibrate at the base length, then
train at the target). Each step takes `grad_accum` micro-batches, runs `forward_hidden`, the
chunked cross-entropy over the lm head, backward, clips and steps AdamW. Metrics go to
`metrics.jsonl` and a progress bar; checkpoints to `checkpoints/step_N`.

Under torchrun (`parallel`: a longctx.distributed.ParallelDims) every rank reads the same global
batches and keeps its rows (dp) and tokens (cp); the loss is normalised by the tokens of the whole
step on every rank and FSDP sums gradients, so a step equals the single-process step. Rank 0
alone writes metrics and checkpoint files (DCP writes every rank's shards).
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import longctx
from longctx.config import RunConfig
from longctx.data.packing import IGNORE_INDEX
from longctx.train import checkpoint as ckpt
from longctx.train.loss import heldout_ce, make_loss_fn, resolve_backend
from longctx.train.metrics import MetricsLog, format_postfix, peak_flops, progress_bar
from longctx.train.optim import build_optimizer
from longctx.train.schedule import build_scheduler


@dataclass
class Stage:
    name: str  # "pretrain", "recalibrate", "train"
    seq_len: int
    batch_size: int  # sequences per micro-batch
    steps: int  # optimizer steps in this stage


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, loss: float, grad_norm: float, last_checkpoint: Path | None):
        self.step, self.last_checkpoint = step, last_checkpoint
        where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written"
        super().__init__(
            f"non-finite loss at step {step} (loss {loss}, grad norm {grad_norm}); stopped without updating; {where}"
        )


# Schedulers' "stop soon" signals (Slurm: scancel and --signal=USR1@T send these): finish the step,
# write a checkpoint, exit 128 + signal number; --resume continues exactly.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class Preempted(RuntimeError):
    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint {checkpoint}; "
            "rerun the same command with --resume to continue"
        )


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        cfg: RunConfig,
        run_dir: str | Path,
        stages: list[Stage],
        make_loader: Callable[[Stage], Iterable[dict]],
        *,
        device: torch.device,
        meta: dict[str, Any] | None = None,
        write_extra: Callable[[Path], None] | None = None,
        show_progress: bool = True,
        parallel=None,
        probe=None,
    ):
        from longctx.distributed import ParallelDims

        self.parallel = parallel if parallel is not None else ParallelDims(device=device)
        self.cfg, self.run_dir, self.stages, self.device = cfg, Path(run_dir), stages, device
        self.make_loader, self.meta, self.write_extra = make_loader, dict(meta or {}), write_extra
        self.show_progress, self.probe = show_progress, probe  # probe: a train.probe.RetrievalProbe or None
        self.total_steps = sum(s.steps for s in stages)
        if hasattr(model, "gradient_checkpointing"):
            model.gradient_checkpointing = cfg.grad_checkpointing
        if self.parallel.distributed:  # rank 0's weights, broadcast shard by shard (others may be on meta)
            from longctx.distributed import parallelize_from_rank0

            self.raw_model = model
            self.model = parallelize_from_rank0(model, self.parallel)
        else:
            self.raw_model = self.model = model.to(device)
        self.optimizer = build_optimizer(self.model, cfg.optimizer, device)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, cfg.schedule)
        self.loss_backend = resolve_backend(cfg.loss_backend, device)  # `auto` made concrete; in step 1's metrics row
        self.loss_fn = make_loss_fn(self.loss_backend, chunk=cfg.loss_chunk, z_loss=cfg.z_loss)
        self.step, self.tokens, self.elapsed = 0, 0, 0.0
        self.last_checkpoint: Path | None = None
        self.best: dict | None = None  # {"key", "value", "step"} of checkpoints/best (checkpoint.best)
        self._loader, self._loader_stage, self._it = None, -1, None
        self._peak = peak_flops(device)

    # ------------------------------------------------------------ stages and data

    def stage_index(self, step: int) -> int:
        """The stage that the update from `step` to `step + 1` belongs to."""
        end = 0
        for i, s in enumerate(self.stages):
            end += s.steps
            if step < end:
                return i
        return len(self.stages) - 1

    def _ensure_loader(self, i: int, state: dict | None = None) -> None:
        if self._loader_stage == i:
            return
        self._loader = self.make_loader(self.stages[i])
        if state is not None:
            self._loader.load_state_dict(state)
        self._loader_stage, self._it = i, iter(self._loader)

    def _next_batch(self) -> dict:
        try:
            return next(self._it)
        except StopIteration:  # a finite loader: start its next epoch
            self._it = iter(self._loader)
            try:
                return next(self._it)
            except StopIteration:
                raise RuntimeError(
                    f"the data loader of stage {self.stages[self._loader_stage].name!r} is empty"
                ) from None

    # ------------------------------------------------------------ checkpoints

    def save(self) -> Path:
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "elapsed": self.elapsed,
            "stage": self._loader_stage,
            "loader": self._loader.state_dict() if self._loader is not None else None,
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(self.device),
            "best": self.best,
        }
        meta = self._checkpoint_meta(total_steps=self.total_steps)
        self.last_checkpoint = ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            model=self.model,
            optimizer=self.optimizer,
            trainer_state=state,
            meta=meta,
            write_extra=self.write_extra,
            keep=self.cfg.checkpoint.keep,
            parallel=self.parallel,
        )
        return self.last_checkpoint

    def _checkpoint_meta(self, **extra) -> dict:
        """meta.json of a checkpoint written now: the run's metadata, tokens so far, and the stage that
        the last step belonged to."""
        stage = self.stages[self.stage_index(max(self.step - 1, 0))]
        return {**self.meta, "tokens": self.tokens, "stage": stage.name, "seq_len": stage.seq_len, **extra}

    def resume(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path, model=self.model, optimizer=self.optimizer)
        self.step, self.tokens, self.elapsed = state["step"], state["tokens"], state.get("elapsed", 0.0)
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"], self.device)
        self.best = state.get("best")
        if self.step < self.total_steps and state["stage"] == self.stage_index(self.step):
            self._ensure_loader(state["stage"], state["loader"])
        self.last_checkpoint = path

    # ------------------------------------------------------------ the step

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        stage = self.stages[self.stage_index(self.step)]
        batches = [self._next_batch() for _ in range(self.cfg.grad_accum)]
        dev = self.device
        # Normalise by the tokens of the whole step, so accumulation equals one big batch.
        count = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)
        denom = max(count, 1)
        ce_sum = torch.zeros((), device=dev)
        z_sum = torch.zeros((), device=dev)
        step_tokens = 0
        for b in batches:
            step_tokens += b["input_ids"].numel()  # tokens processed (the budget's unit), not only those with a label
            b = self.parallel.shard_batch(b)
            ids = b["input_ids"].to(dev, non_blocking=True)
            pos = b.get("position_ids")
            cu = b.get("cu_seqlens")
            with self._autocast():
                hidden = self.model.forward_hidden(
                    ids,
                    position_ids=None if pos is None else pos.to(dev, non_blocking=True),
                    cu_seqlens=None if cu is None else cu.to(dev, non_blocking=True),
                )
                # taken after the forward: under FSDP only then is it the whole (unsharded) matrix
                head = self.raw_model.lm_head.weight
                parts = self.loss_fn(hidden, head, b["labels"].to(dev, non_blocking=True))
            (parts.total / denom).backward()
            ce_sum += parts.ce_sum
            z_sum += parts.z_sum
        clip = self.cfg.optimizer.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
        if self.parallel.distributed:  # each rank summed its own tokens' loss
            from longctx.distributed import all_reduce_sum

            ce_sum, z_sum = all_reduce_sum(torch.stack([ce_sum, z_sum]))
        loss = float(ce_sum) / denom
        gn = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        if not (math.isfinite(loss) and math.isfinite(gn)):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(self.step + 1, loss, gn, self.last_checkpoint)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        self.step += 1
        self.tokens += step_tokens
        self.elapsed += dt
        row = {
            "step": self.step,
            "stage": stage.name,
            "seq_len": stage.seq_len,
            "loss": loss,
            "lr": lr,
            "grad_norm": gn,
            "tokens": self.tokens,
            "tokens_per_s": step_tokens / dt,
            "step_time_s": dt,
            "elapsed_s": self.elapsed,
        }
        if self.cfg.z_loss > 0:
            row["z_loss"] = float(z_sum) / denom
        if dev.type == "cuda":
            row["peak_mem_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
            fpt = getattr(self.raw_model, "flops_per_token", None)
            if self._peak and fpt is not None:
                row["mfu"] = fpt(stage.seq_len) * row["tokens_per_s"] / (self._peak * self.parallel.world_size)
        return row

    # ------------------------------------------------------------ the run

    def fit(self) -> None:
        """Train from self.step to the end of the last stage. Raises NonFiniteLoss (nothing saved)."""
        self.model.train()
        main = self.parallel.is_main
        metrics = MetricsLog(self.run_dir, resume_step=self.step) if main else None
        bar = progress_bar(self.total_steps, self.step, "train") if self.show_progress and main else None
        interval = self.cfg.checkpoint.interval
        self._stop_signum = 0
        handlers = self._catch_stop_signals()
        prof = self._profiler()
        startup = time.time() - longctx.STARTED  # imports, model, data: what the first step of this process waited for
        try:
            while self.step < self.total_steps:
                i = self.stage_index(self.step)
                self._ensure_loader(i)
                if bar is not None:
                    bar.set_description(f"{self.stages[i].name} @{self.stages[i].seq_len}")
                if prof is not None:
                    prof.before(self.step + 1)
                row = self.train_step()
                if startup is not None:
                    row["startup_s"], startup = startup, None
                    row["loss_backend"] = self.loss_backend
                if prof is not None:
                    prof.after(self.step)
                row.update(self._probe())
                self._keep_best(row)
                if metrics is not None:
                    metrics.log(row)
                if bar is not None:
                    bar.set_postfix_str(format_postfix(row), refresh=False)
                    bar.update(1)
                saved = (interval and self.step % interval == 0) or self.step == self.total_steps
                if saved:
                    self.save()
                signum = self._stop_requested()
                if signum:
                    if not saved:
                        self.save()
                    raise Preempted(signum, self.step, self.last_checkpoint)
        finally:
            if prof is not None:
                prof.close()
            for sig, old in handlers.items():
                signal.signal(sig, old)
            if metrics is not None:
                metrics.close()
            if bar is not None:
                bar.close()

    def _profiler(self):
        """A StepProfiler when profile.start is set (every rank profiles itself), else None."""
        if not self.cfg.profile.start:
            return None
        from longctx.train.profiling import StepProfiler

        return StepProfiler(
            self.cfg.profile.start,
            self.cfg.profile.steps,
            self.run_dir / "profile",
            self.device,
            rank=self.parallel.rank,
        )

    def _catch_stop_signals(self) -> dict:
        """Turn STOP_SIGNALS into a request checked between steps; returns the handlers replaced."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def request(signum, frame):
            self._stop_signum = signum

        return {sig: signal.signal(sig, request) for sig in STOP_SIGNALS}

    def _stop_requested(self) -> int:
        """The signal asking to stop (0: none). Under torchrun every rank learns it in the same step,
        so all of them write the (collective) checkpoint together."""
        signum = self._stop_signum
        if self.parallel.distributed:
            from longctx.distributed.collectives import all_reduce_max

            signum = all_reduce_max(signum)
        return signum

    def _probe(self) -> dict[str, float]:
        """Retrieval scores every probe.interval steps and at the end; {} otherwise.

        Every rank runs it (an FSDP forward gathers weights); under context parallelism the
        model expects sharded inputs, so the probe is skipped there."""
        every = self.cfg.probe.interval
        if self.probe is None or not every or (self.step % every and self.step != self.total_steps):
            return {}
        if self.parallel.cp > 1:
            return {}
        target = self.model if self.parallel.distributed else self.raw_model
        with self._autocast():
            return self.probe.probe(target, self.device)

    def _keep_best(self, row: dict) -> None:
        """checkpoint.best: save the weights to checkpoints/best when the metric beats every earlier
        value (highest; lowest for "-key"). Rank 0's row decides, for every rank."""
        spec = self.cfg.checkpoint.best
        if not spec:
            return
        key, sign = spec.lstrip("-"), (-1.0 if spec.startswith("-") else 1.0)
        better = key in row and (self.best is None or sign * float(row[key]) > sign * self.best["value"])
        if self.parallel.distributed:
            from longctx.distributed.collectives import all_reduce_max

            better = bool(all_reduce_max(int(better) if self.parallel.is_main else 0))
        if not better:
            return
        self.best = {"key": key, "value": float(row[key]) if key in row else None, "step": self.step}
        ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            model=self.model,
            optimizer=None,
            trainer_state=None,
            meta=self._checkpoint_meta(best=self.best),
            write_extra=self.write_extra,
            parallel=self.parallel,
            name="best",
        )

    def load_best(self) -> dict | None:
        """checkpoint.export == "best": put the best weights back in the model before its export; returns
        the best record (None when the run keeps its last weights)."""
        if self.cfg.checkpoint.export != "best":
            return None
        if self.best is None:  # the metric was never logged (e.g. the probe is skipped under cp > 1)
            if self.parallel.is_main:
                warnings.warn(
                    f"checkpoint.export: best, but {self.cfg.checkpoint.best} was never logged; "
                    "exporting the last weights",
                    stacklevel=2,
                )
            return None
        if self.best["step"] != self.step:
            ckpt.load_checkpoint(self.run_dir / ckpt.CHECKPOINTS / "best", model=self.model)
        return self.best

    @torch.no_grad()
    def heldout_nll(self, batches: list[dict]) -> float:
        """Mean next-token NLL of the model on loader batches, computed as a training step computes
        its loss (each rank its shard, summed over ranks) without a gradient. A collective under
        torchrun: every rank calls it with the same batches."""
        was_training = self.model.training
        self.model.eval()
        try:
            ce_sum, count = heldout_ce(
                self.model, batches, self.loss_fn, self.device, shard=self.parallel.shard_batch, head=self.raw_model
            )
        finally:
            self.model.train(was_training)
        if self.parallel.distributed:
            from longctx.distributed import all_reduce_sum

            ce_sum = all_reduce_sum(ce_sum)
        return float(ce_sum) / max(count, 1)

    def export_model(self) -> nn.Module | None:
        """The trained model with whole weights for the HF export: on rank 0 (None on the other
        ranks, which must call this too: it gathers the shards)."""
        if not self.parallel.distributed:
            return self.raw_model
        from longctx.distributed import unsharded_copy

        return unsharded_copy(self.model)
