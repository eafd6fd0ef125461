"""Taking OUT for a training run, once everything is validated: lock it, re-check it under the lock,
clear the previous run's files (--force), and, for a fresh run that fails before its first
checkpoint, leave nothing behind.

Under torchrun rank 0 does the filesystem work; a refusal there is raised on every rank.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from longctx.errors import UsageError
from longctx.train.lock import RunLock
from longctx.train.outdir import check_out, clear_run, write_run_config


@dataclass
class RunDir:
    out: Path
    resume_from: Path | None  # the checkpoint to continue from, found under the lock
    created: bool  # OUT did not exist before this run
    lock: RunLock | None  # None on ranks other than 0

    def discard(self) -> None:
        """Remove what this fresh run wrote (it failed before anything worth keeping), and OUT if
        this run created it."""
        if self.lock is None:
            return
        clear_run(self.out)
        self.release()
        if self.created and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def open_run_dir(
    dims, out: Path, *, resume: bool, force: bool, run_config: dict, prog: str, force_extra: tuple[str, ...] = ()
) -> RunDir:
    """Lock OUT (creating it), re-check it, apply --force, write run_config.yaml for a fresh run
    (a resumed one writes it once its checkpoint has loaded). force_extra: more names this command
    writes into OUT (extend --eval: ruler.json and its journal)."""
    dims.barrier()
    failure, run = None, RunDir(out, None, False, None)
    if dims.is_main:
        try:
            run = _open(out, resume=resume, force=force, run_config=run_config, prog=prog, force_extra=force_extra)
        except UsageError as e:
            failure = e
    if dims.distributed:
        from longctx.distributed.collectives import all_reduce_max

        if all_reduce_max(int(failure is not None)) and failure is None:
            failure = UsageError(f"--out {out}: rank 0 could not take the run directory")
    if failure is not None:
        raise failure
    dims.barrier()
    if not dims.is_main and resume:  # the checkpoint rank 0 found under the lock
        from longctx.train.checkpoint import latest_checkpoint

        run.resume_from = latest_checkpoint(out)
    return run


def _open(out: Path, *, resume: bool, force: bool, run_config: dict, prog: str, force_extra) -> RunDir:
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(out).acquire()
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    run = RunDir(out, None, created, lock)
    try:
        run.resume_from = check_out(out, resume=resume, force=force, locked=True)  # another process may have been here
        if force:
            removed, kept = clear_run(out, force_extra)
            if removed:
                print(
                    f"{prog}: --force removed from {out}: {', '.join(removed)}"
                    + (f"; kept: {', '.join(kept)}" if kept else ""),
                    file=sys.stderr,
                )
        if not resume:
            write_run_config(out, run_config)
    except BaseException:
        lock.release()
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    return run
