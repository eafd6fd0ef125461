"""The HF export of a trained model into a run directory (or any directory).

`HybridLM.save_pretrained` replaces its target directory as a whole, which would take the run's
checkpoints and metrics with it; so the model is saved into a hidden directory inside OUT and
its files are moved up, replacing the previous export's.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from longctx.errors import UsageError
from longctx.train.outdir import TRAIN_META, write_train_meta

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HF_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt",
             "added_tokens.json", "chat_template.jinja", "chat_template.json")


def parse_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in DTYPES:
        raise UsageError(f"dtype {name!r} is not supported; accepted: {', '.join(DTYPES)}")
    return DTYPES[name]


def _is_hf_file(name: str) -> bool:
    return name in _HF_FILES or name.endswith(".safetensors")


def export_hf(model, out: str | Path, *, tokenizer=None, train_meta: dict | None = None,
              dtype: torch.dtype | None = None) -> Path:
    """Write the HF model (config, safetensors, tokenizer) and longctx_train.json into OUT,
    leaving OUT's other files (checkpoints/, metrics.jsonl) alone. dtype casts the model first."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        model = model.to(dtype)
    staging = out / ".hf-export"
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging, tokenizer=tokenizer)
    for f in out.iterdir():  # a previous export's shards that this one does not overwrite
        if f.is_file() and _is_hf_file(f.name) and not (staging / f.name).exists():
            f.unlink()
    for f in staging.iterdir():
        os.replace(f, out / f.name)
    staging.rmdir()
    if train_meta is not None:
        write_train_meta(out, train_meta)
    return out


__all__ = ["export_hf", "parse_dtype", "DTYPES", "TRAIN_META"]
