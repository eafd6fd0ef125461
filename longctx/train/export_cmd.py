"""`longctx export`: a training checkpoint -> an HF model directory.

    longctx export --checkpoint runs/base/checkpoints/step_1000 --out runs/base-step1000

The checkpoint carries the model's config.json and tokenizer (written by pretrain/extend), so it
exports on its own; the output loads in transformers and `lm_eval --model hf`. A DRoPE run's
softmax temperature is folded in as the run's own export does it: a fixed c from the run's
options, an `auto` c from RUN/drope_temperature.json (written when that run finished).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from longctx.errors import UsageError
from longctx.train import checkpoint as ckpt
from longctx.train.export import DTYPES, export_hf, parse_dtype
from longctx.train.outdir import TRAIN_META, check_new_out, export_files


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="a checkpoint dir: RUN/checkpoints/step_N, or RUN/checkpoints/best (checkpoint.best)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="HF model directory to write")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="weights dtype (default: float32, as trained)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")


def check_checkpoint(path: Path) -> dict:
    if not path.is_dir():
        raise UsageError(f"--checkpoint {path}: no such directory; give RUN/checkpoints/step_N")
    missing = [n for n in ("meta.json", "config.json", "state/.metadata") if not (path / n).is_file()]
    if missing:
        raise UsageError(f"--checkpoint {path}: not a complete longctx checkpoint (missing {', '.join(missing)})")
    try:
        return ckpt.read_meta(path)
    except ValueError as e:
        raise UsageError(f"--checkpoint {path}: meta.json is not valid JSON ({e})") from None


def load_from_checkpoint(path: Path):
    """A HybridLM with the checkpoint's weights (the optimizer state is not read)."""
    from longctx.model import HybridLM, hf

    config = hf.read_config(path)
    with torch.device("meta"):
        model = HybridLM(config)
    model.to_empty(device="cpu")
    model.tie_weights()
    try:
        ckpt.load_checkpoint(path, model=model)
    except Exception as e:  # noqa: BLE001 -- a damaged or foreign DCP directory
        raise UsageError(
            f"--checkpoint {path}: cannot read its weights "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        ) from None
    return model


def temperature_record(path: Path, meta: dict, config) -> dict | None:
    """The DRoPE temperature to fold into this checkpoint's export, or None."""
    setting = (meta.get("rope_options") or {}).get("temperature") if meta.get("method") == "drope" else None
    if setting is None:
        return None
    from longctx.train.temperature import FILE, DropeTemperature

    if setting != "auto":
        return DropeTemperature(setting, base_len=meta["base_len"], target=meta["target"]).record(
            config, float(setting)
        )
    found = path.parent.parent / FILE  # RUN/checkpoints/step_N -> RUN/drope_temperature.json
    if not found.is_file():
        print(
            f"longctx export: the run fits its DRoPE temperature when it finishes and {found} does not exist "
            "yet; exporting without a temperature (beta = 1)",
            file=sys.stderr,
        )
        return None
    return json.loads(found.read_text())


def run(args: argparse.Namespace) -> int:
    from longctx.data import load_tokenizer
    from longctx.train.lock import writing_into

    path, out = Path(args.checkpoint), Path(args.out)
    meta = check_checkpoint(path)
    check_new_out(out, force=args.force)
    dtype = parse_dtype(args.dtype)
    tokenizer = load_tokenizer(str(path)) if (path / "tokenizer_config.json").is_file() else None
    model = load_from_checkpoint(path)
    train_meta = {k: v for k, v in meta.items() if k not in ("stage", "total_steps")}
    train_meta["steps"] = meta["step"]
    with writing_into(out):  # locked: not into a run directory a training process is writing
        before = {p.name for p in out.iterdir()}
        record = temperature_record(path, meta, model.config)
        if record is not None:
            from longctx.train.temperature import DropeTemperature

            DropeTemperature.fold(model, record)
            train_meta["temperature"] = record
            print(f"longctx export: {DropeTemperature.describe(record)}")
        export_hf(model, out, tokenizer=tokenizer, train_meta=train_meta, dtype=dtype)
        after = {p.name for p in out.iterdir()}
    written = set(export_files(out)) | {TRAIN_META}
    replaced, removed = sorted(before & written), sorted(before - after)
    if replaced or removed:
        print(
            "longctx export: --force "
            + "; ".join(
                f"{what} {', '.join(names)}" for what, names in (("replaced", replaced), ("removed", removed)) if names
            ),
            file=sys.stderr,
        )
    print(f"longctx export: step {meta['step']} of {path.parent.parent} saved to {out}")
    return 0
