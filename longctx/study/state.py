"""Whether a stage is done, started (resume it) or new: read from what it leaves on disk."""

from __future__ import annotations

import json
from pathlib import Path

from longctx.study.stage import Stage


def train_done(run_dir: Path) -> bool:
    meta = run_dir / "longctx_train.json"  # export_hf writes it after the weights
    if not (meta.is_file() and (run_dir / "config.json").is_file() and any(run_dir.glob("*.safetensors"))):
        return False
    try:
        return "steps" in json.loads(meta.read_text())
    except json.JSONDecodeError:
        return False


def eval_done(res: Path) -> bool:
    if not res.is_file():
        return False
    from longctx import results

    try:
        r = results.load(res)
    except Exception:  # noqa: BLE001 -- a broken file is redone
        return False
    # `longctx eval --finished-only` results of an evaluation cut short: rerun it (it resumes from its journal)
    return not any(results.unfinished(e) for per in r["scores"].values() for e in per.values())


def status(stage: Stage) -> str:
    """'done', 'resume' or 'new'."""
    if stage.kind in ("pretrain", "extend"):
        if train_done(stage.out):
            return "done"
        return "resume" if stage.out.is_dir() and any(stage.out.iterdir()) else "new"
    if stage.kind == "compare":
        outs = [stage.out, stage.out.with_name("ruler.png")]
        if all(p.is_file() for p in outs) and all(i.is_file() for i in stage.inputs):
            newest = max(i.stat().st_mtime for i in stage.inputs)
            if min(p.stat().st_mtime for p in outs) >= newest:
                return "done"
        return "new"
    return "done" if eval_done(stage.out) else "new"
