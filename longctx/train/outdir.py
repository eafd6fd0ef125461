"""The run directory OUT: checks before anything is written, what longctx wrote there, and the
training metadata file.

OUT ends up holding the HF model (config.json, safetensors, tokenizer), `longctx_train.json`
(how it was trained: the base length `longctx extend` reads back, and `export_files`, the HF files
the export wrote), `run_config.yaml`, `metrics.jsonl` and `checkpoints/`. Files of the user's
(notes, an eval's ruler.json, analysis/) live beside them: --force removes only longctx's own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from longctx.errors import UsageError
from longctx.paths import check_output
from longctx.train.checkpoint import CHECKPOINTS, latest_checkpoint, list_checkpoints
from longctx.train.lock import LOCK_FILE, check_free
from longctx.train.metrics import METRICS_FILE

TRAIN_META = "longctx_train.json"
RUN_CONFIG = "run_config.yaml"
# what training writes besides the HF export (profile/: profile.start; .hf-export: an export in flight)
_TRAINING_FILES = (TRAIN_META, RUN_CONFIG, METRICS_FILE, CHECKPOINTS, "profile", ".hf-export")
# the HF export of a run written before longctx_train.json listed its files
_EXPORT_FALLBACK = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def is_run(out: Path) -> bool:
    """OUT holds a longctx training run (a user's config.json or metrics.jsonl alone does not make one)."""
    return (out / RUN_CONFIG).is_file() or (out / TRAIN_META).is_file() or bool(list_checkpoints(out))


def _entries(out: Path) -> list[Path]:
    """OUT's entries besides the lock file (a run directory with only that is one that just started)."""
    return [p for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []


def check_out(out: str | Path, *, resume: bool, force: bool, locked: bool = False) -> Path | None:
    """Validate OUT for a training run; return the checkpoint to resume from (None = start fresh).

    --resume continues the run in OUT (it must hold one); a non-empty OUT otherwise needs --force
    (remove the run's files and start over; only a directory that holds a longctx run). A live
    process holding OUT's lock is refused (locked: this process holds it). Writes nothing.
    """
    out = Path(out)
    check_output(out, "--out")
    if not locked:
        check_free(out)
    if resume:
        if not out.exists():
            raise UsageError(
                f"--resume: --out {out} does not exist, so there is no run to continue; leave out --resume to start one"
            )
        if is_run(out):
            return latest_checkpoint(out)
        if not _entries(out) and (out / LOCK_FILE).exists():
            return None  # a run stopped right after it took OUT, before writing anything
        if not _entries(out):
            raise UsageError(
                f"--resume: --out {out} is empty, so there is no run to continue; leave out --resume to start one"
            )
        raise UsageError(
            f"--resume: --out {out} holds no longctx run (no {RUN_CONFIG}, {TRAIN_META} or "
            f"{CHECKPOINTS}/); nothing was changed"
        )
    if not _entries(out):
        return None
    if force:
        if not is_run(out):
            raise UsageError(f"--out {out} is not empty and holds no longctx run; --force deletes only run directories")
        return None
    raise UsageError(f"--out {out} is not empty; pass --resume to continue its run or --force to start over")


def export_files(out: Path) -> list[str]:
    """The HF files longctx's export wrote into OUT (as listed in longctx_train.json)."""
    meta = read_train_meta(out, strict=False) or {}
    listed = meta.get("export_files")
    if isinstance(listed, list):
        return [n for n in listed if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")]
    if not is_run(out):
        return []
    shards = [p.name for p in out.glob("model-*-of-*.safetensors")]
    return list(_EXPORT_FALLBACK) + shards


def clear_run(out: str | Path, extra: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Remove what longctx wrote in OUT (training files, its HF export, `extra` names); return
    (removed, kept) entry names. The lock file stays."""
    out = Path(out)
    ours = set(_TRAINING_FILES) | set(export_files(out)) | set(extra)
    removed = []
    for name in sorted(ours):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name + ("/" if name == CHECKPOINTS or name == "profile" else ""))
    kept = sorted(p.name for p in _entries(out))
    return removed, kept


def check_new_out(out: str | Path, *, force: bool) -> None:
    """For commands that only write a model (export): OUT must be absent or empty unless --force."""
    out = Path(out)
    check_output(out, "--out")
    check_free(out)
    if _entries(out) and not force:
        raise UsageError(f"--out {out} is not empty; pass --force to overwrite it")


def read_train_meta(model_dir: str | Path, *, strict: bool = True) -> dict | None:
    p = Path(model_dir) / TRAIN_META
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        if not strict:
            return None
        raise UsageError(f"{p}: not valid JSON") from None


def write_train_meta(out: str | Path, meta: dict) -> None:
    (Path(out) / TRAIN_META).write_text(json.dumps(meta, indent=2, default=str) + "\n")


def write_run_config(out: str | Path, cfg_dict: dict) -> None:
    (Path(out) / RUN_CONFIG).write_text(yaml.safe_dump(cfg_dict, sort_keys=False))


def read_run_config(out: str | Path) -> dict | None:
    p = Path(out) / RUN_CONFIG
    return yaml.safe_load(p.read_text()) if p.is_file() else None
