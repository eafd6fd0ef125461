"""The run directory OUT: checks before anything is written, and the training metadata file.

OUT ends up holding the HF model (config.json, safetensors, tokenizer), `longctx_train.json`
(how it was trained: the base length `longctx extend` reads back), `run_config.yaml`,
`metrics.jsonl` and `checkpoints/`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from longctx.errors import UsageError
from longctx.train.checkpoint import CHECKPOINTS, latest_checkpoint
from longctx.train.metrics import METRICS_FILE

TRAIN_META = "longctx_train.json"
RUN_CONFIG = "run_config.yaml"
_OURS = (TRAIN_META, RUN_CONFIG, METRICS_FILE, CHECKPOINTS)


def check_out(out: str | Path, *, resume: bool, force: bool) -> Path | None:
    """Validate OUT for a training run; return the checkpoint to resume from (None = start fresh).

    A non-empty OUT needs --resume (continue its run) or --force (delete it and start over; only a
    directory that holds a longctx run is deleted). Writes nothing.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    if not out.exists() or not any(out.iterdir()):
        return None
    if resume:
        return latest_checkpoint(out)
    if force:
        if not any((out / name).exists() for name in _OURS):
            raise UsageError(f"--out {out} is not empty and holds no longctx run; --force deletes only run directories")
        return None
    raise UsageError(f"--out {out} is not empty; pass --resume to continue its run or --force to start over")


def prepare_out(out: str | Path, *, force: bool) -> Path:
    """Create OUT (after validation), clearing it first with --force."""
    out = Path(out)
    if force and out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_new_out(out: str | Path, *, force: bool) -> None:
    """For commands that only write a model (export): OUT must be absent or empty unless --force."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {out} is not empty; pass --force to overwrite it")


def read_train_meta(model_dir: str | Path) -> dict | None:
    p = Path(model_dir) / TRAIN_META
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"{p}: not valid JSON") from None


def write_train_meta(out: str | Path, meta: dict) -> None:
    (Path(out) / TRAIN_META).write_text(json.dumps(meta, indent=2, default=str) + "\n")


def write_run_config(out: str | Path, cfg_dict: dict) -> None:
    (Path(out) / RUN_CONFIG).write_text(yaml.safe_dump(cfg_dict, sort_keys=False))


def read_run_config(out: str | Path) -> dict | None:
    p = Path(out) / RUN_CONFIG
    return yaml.safe_load(p.read_text()) if p.is_file() else None
