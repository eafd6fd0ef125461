"""What --resume may change: the settings of a run are fixed once it started, except a few.

A resumed run must be the run that was started: the model, lengths, batch, optimizer, schedule,
data and seed are what its checkpoint's weights, optimizer state, LR schedule and data position
belong to, so a flag that changes one of them is refused, naming the first difference. The budget
(steps/tokens: continue further), checkpointing, probing, profiling, the device, activation
checkpointing and the loss kernel do not change what is trained; they are applied, announced on
stderr, and recorded in run_config.yaml.
"""

from __future__ import annotations

from pathlib import Path

from longctx.errors import UsageError

MAY_CHANGE = (
    "steps",
    "tokens",
    "device",
    "grad_checkpointing",
    "loss_backend",
    "loss_chunk",
    "export_dtype",
    "checkpoint.",
    "probe.",
    "profile.",
    "extend.eval",
)
# checkpoint meta.json keys that pin an extension run to its source (pretrain: model, kind)
_META_KEYS = ("kind", "model", "method", "target", "base_len", "source_model", "rope_parameters")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _may_change(key: str) -> bool:
    return any(key == m or (m.endswith(".") and key.startswith(m)) for m in MAY_CHANGE)


def _show(v) -> str:
    return "unset" if v is None else str(v)


def compare(saved: dict, now: dict, where: str) -> list[str]:
    """Refuse a difference in a fixed setting; return "key: old -> new" for the ones applied."""
    a, b = flatten(saved), flatten(now)
    changes = [k for k in list(b) + [k for k in a if k not in b] if a.get(k) != b.get(k)]
    fixed = [k for k in changes if not _may_change(k)]
    if fixed:
        k = fixed[0]
        more = f" (and {', '.join(fixed[1:])})" if len(fixed) > 1 else ""
        raise UsageError(
            f"--resume: {k} is {_show(a.get(k))} in {where} but {_show(b.get(k))} now{more}; a resumed "
            "run keeps its settings: leave out the flag, or start a new run (another --out, or --force)"
        )
    return [f"{k}: {_show(a.get(k))} -> {_show(b.get(k))}" for k in changes]


def _same_source(old, new) -> bool:
    if old == new:
        return True
    try:
        return Path(str(old)).resolve() == Path(str(new)).resolve() or Path(str(old)).samefile(str(new))
    except OSError:
        return False


def check_resume(out: Path, checkpoint: Path | None, run_config: dict, meta: dict) -> list[str]:
    """Compare this invocation with the run in OUT (its run_config.yaml and the checkpoint's meta.json);
    return the applied changes, or raise UsageError for a refused one. Reads only."""
    from longctx.train import checkpoint as ckpt
    from longctx.train.outdir import RUN_CONFIG, read_run_config

    saved = read_run_config(out)
    notes = compare(saved, run_config, f"{out / RUN_CONFIG}") if isinstance(saved, dict) else []
    if checkpoint is not None:
        old = ckpt.read_meta(checkpoint)
        for k in _META_KEYS:
            if (
                k in old
                and k in meta
                and old[k] != meta[k]
                and not (k == "source_model" and _same_source(old[k], meta[k]))
            ):
                raise UsageError(
                    f"--resume: {k} is {_show(old[k])} in {checkpoint} but {_show(meta[k])} now; a resumed "
                    "run keeps its settings: leave out the flag, or start a new run (another --out, or --force)"
                )
    return notes
