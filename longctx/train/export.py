"""The HF export of a trained model into a run directory (or any directory).

`HybridLM.save_pretrained` replaces its target directory as a whole, which would take the run's
checkpoints and metrics with it; so the model is saved into a hidden directory inside OUT and
its files are moved up, replacing the previous export's. longctx_train.json lists the files
(`export_files`), so that the next export or --force removes those and nothing of the user's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from longctx.errors import UsageError
from longctx.paths import honour_umask
from longctx.train.outdir import TRAIN_META, export_files, write_train_meta

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in DTYPES:
        raise UsageError(f"dtype {name!r} is not supported; accepted: {', '.join(DTYPES)}")
    return DTYPES[name]


def export_hf(
    model, out: str | Path, *, tokenizer=None, train_meta: dict | None = None, dtype: torch.dtype | None = None
) -> Path:
    """Write the HF model (config, safetensors, tokenizer) and longctx_train.json into OUT,
    leaving OUT's other files (checkpoints/, metrics.jsonl) alone. dtype casts the model first."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        model = model.to(dtype)
    staging = out / ".hf-export"
    if staging.exists():
        shutil.rmtree(staging)
    previous = set(export_files(out))
    model.save_pretrained(staging, tokenizer=tokenizer)
    written = sorted(f.name for f in staging.iterdir())
    for name in previous - set(written):  # a previous export's shards that this one does not overwrite
        if (out / name).is_file():
            (out / name).unlink()
    for name in written:
        honour_umask(staging / name)  # safetensors are written 0600 through a temp file
        os.replace(staging / name, out / name)
    staging.rmdir()
    if train_meta is not None:
        write_train_meta(out, {**train_meta, "export_files": written})
    return out


__all__ = ["export_hf", "parse_dtype", "DTYPES", "TRAIN_META"]
