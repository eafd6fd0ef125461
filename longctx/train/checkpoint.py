"""Training checkpoints: `RUN/checkpoints/step_N/`, written atomically, the newest K kept; and
`RUN/checkpoints/best/` (model only) when checkpoint.best names a metric.

A checkpoint directory holds
    state/              model + optimizer through torch.distributed.checkpoint (sharded later under FSDP)
    trainer_state.pt    scheduler, data position, RNG states, step and tokens
    meta.json           step, tokens, stage and the run's training metadata
    + what `write_extra` adds: the commands add the model's HF config.json and tokenizer files,
      so a checkpoint exports on its own (`longctx export`)
It is written under `checkpoints/.tmp-step_N` and renamed into place only when complete, so a
crash mid-write never leaves a directory that looks like a checkpoint.

Under torchrun every rank writes its own shards into state/ (DCP; a later run with another
(dp, cp) layout reads them back resharded) and rank 0 does everything else. The run directory
must be on a filesystem all nodes share.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

CHECKPOINTS = "checkpoints"
_STEP = re.compile(r"^step_(\d+)$")


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP.match(d.name)
        if m and d.is_dir() and (d / "meta.json").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _dcp(fn, *args, **kwargs):
    # Single process: DCP warns that no process group exists, which is exactly the intent.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        return fn(*args, **kwargs)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    trainer_state: dict[str, Any] | None,
    meta: dict[str, Any],
    write_extra: Callable[[Path], None] | None = None,
    keep: int | None = None,
    parallel=None,
    name: str | None = None,
) -> Path:
    """name: the directory under checkpoints/ (default step_N, the resumable series that `keep`
    prunes); `best` holds the best-scoring weights (optimizer None: model only)."""
    main = parallel is None or parallel.is_main
    root = Path(run_dir) / CHECKPOINTS
    name = name or f"step_{step}"
    final = root / name
    tmp = root / f".tmp-{name}"
    if main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if parallel is not None:
        parallel.barrier()
    if optimizer is not None:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optimizer": osd}
    else:
        state = {"model": get_model_state_dict(model)}
    _dcp(dcp.save, state, checkpoint_id=str(tmp / "state"))
    if not main:
        parallel.barrier()  # until rank 0 has renamed it into place
        return final
    if trainer_state is not None:  # None: weights only (checkpoints/best), not a point to resume from
        torch.save(trainer_state, tmp / "trainer_state.pt")
    if write_extra is not None:
        write_extra(tmp)
    (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=2, default=str))
    if final.exists():  # re-saving a step (a resumed run that stops where it started), or a new best
        old = root / f".old-{name}"
        os.replace(final, old)
        shutil.rmtree(old)
    os.replace(tmp, final)
    if keep:
        for _, d in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(d, ignore_errors=True)
    if parallel is not None:
        parallel.barrier()
    return final


def read_meta(ckpt: str | Path) -> dict:
    return json.loads((Path(ckpt) / "meta.json").read_text())


def load_checkpoint(
    ckpt: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load model (and optimizer) state in place; return the trainer state (None if not wanted)."""
    ckpt = Path(ckpt)
    if optimizer is not None:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optimizer": osd}
    else:
        state = {"model": get_model_state_dict(model)}
    _dcp(dcp.load, state, checkpoint_id=str(ckpt / "state"))
    if optimizer is not None:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    else:
        set_model_state_dict(model, state["model"])
    if optimizer is None:
        return {}
    return torch.load(ckpt / "trainer_state.pt", weights_only=False)
