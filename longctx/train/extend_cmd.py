"""`longctx extend`: adapt a model's position encoding to a longer context and train it there.

    longctx extend --method drope --target 65536 --model runs/base --out runs/drope-64k --steps 2000
    longctx extend --config configs/extend/yarn-64k.yaml --model runs/base --out runs/yarn-64k

The base length comes from --base-len, else the model's longctx_train.json (written by
`longctx pretrain`), else its config (`original_max_position_embeddings`, then
`max_position_embeddings`). The method gives the new `rope_parameters` and a plan: DRoPE first
recalibrates at the base length (extend.recalibrate_fraction of the steps, same tokens per step;
0 skips it, as Olmo Hybrid's 64k stage does; 1 trains at the base length only, the paper's own recipe),
then trains at the target; the others train at the target. DRoPE's softmax temperature
(extend.rope.temperature: c or auto) is fixed or fitted after training and folded into the exported
weights (longctx.train.temperature). `--dry-run` prints all of it and writes nothing.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import yaml

from longctx import __version__
from longctx.config import RunConfig, apply_overrides, from_dict, load_run_config, resolve_steps, validate
from longctx.errors import UsageError
from longctx.lengths import parse_length
from longctx.train.cli_args import add_training_arguments, overrides
from longctx.train.data import check_data, data_prefetch, loader_factory
from longctx.train.export import parse_dtype
from longctx.train.loop import Stage
from longctx.train.outdir import read_run_config, read_train_meta
from longctx.train.probe import build_probe
from longctx.train.rundir import open_run_dir
from longctx.train.runs import check_device, check_memory, resume_point, run_training, start_parallel

EVAL_OUT = "ruler.json"  # extend --eval's results, inside OUT


def add_arguments(p: argparse.ArgumentParser) -> None:
    import rope_methods

    p.add_argument("--method", help=f"position-encoding method: {', '.join(rope_methods.METHODS)}")
    p.add_argument("--target", help="context length to extend to, e.g. 65536 or 64k")
    p.add_argument("--model", required=True, metavar="DIR_OR_HUB_ID", help="HF model directory or Hub id")
    p.add_argument("--base-len", help="the model's trained context (default: from the model)")
    p.add_argument(
        "--recalibrate-fraction",
        help="DRoPE: share of the steps at the base length (default 0.1; 0 = none, Olmo Hybrid's variant; "
        "1 = all: the paper's own recipe, extended zero-shot with the temperature)",
    )
    p.add_argument("--eval", action="store_true", default=None, help="run `longctx eval` at 4k..target afterwards")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and config; train and write nothing")
    add_training_arguments(p, seq_len=False)


def parse_len(value, flag: str) -> int | None:
    """65536, '65536', '64k' (k = 1024); None when the flag is not given."""
    return None if value is None else parse_length(value, flag)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    out = Path(args.out)
    if args.resume and args.config is None and (saved := read_run_config(out)) is not None:
        cfg = from_dict(saved)
    else:
        cfg = load_run_config(args.config)
    over = overrides(args)
    over.update(
        {
            "extend.method": args.method,
            "extend.target": parse_len(args.target, "--target"),
            "extend.base_len": parse_len(args.base_len, "--base-len"),
            "extend.recalibrate_fraction": args.recalibrate_fraction,
            "extend.eval": args.eval,
        }
    )
    cfg = apply_overrides(cfg, over)
    if args.steps is not None:
        cfg.tokens = None
    if args.tokens is not None:
        cfg.steps = None
    validate(cfg)
    return cfg


def get_method(name: str | None):
    import rope_methods

    if name is None:
        raise UsageError(f"no method given: pass --method, one of {', '.join(rope_methods.METHODS)}")
    try:
        return rope_methods.get(name)
    except ValueError:
        raise UsageError(f"--method {name!r} is unknown; accepted: {', '.join(rope_methods.METHODS)}") from None


def read_model_config(spec: str):
    """(local dir, HF config) of --model, or a one-line error; reads no weights."""
    from longctx.model import hf

    try:
        model_dir = hf.resolve_dir(spec)
        return model_dir, hf.read_config(model_dir)
    except UsageError as e:
        raise UsageError(f"--model {spec}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- a corrupt config.json, an unknown model_type, ...
        raise UsageError(f"--model {spec}: cannot read its config ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def infer_base_len(cfg: RunConfig, model_dir: Path, config) -> tuple[int, str]:
    """The context the model was trained at, and where that number came from."""
    if cfg.extend.base_len is not None:
        return cfg.extend.base_len, "--base-len"
    meta = read_train_meta(model_dir)
    if meta and isinstance(meta.get("seq_len"), int):
        return meta["seq_len"], "longctx_train.json"
    from rope_methods import is_unrotated

    rp = getattr(config, "rope_parameters", None) or {}
    flats = (
        [rp] if not any(isinstance(v, dict) for v in rp.values()) else [v for v in rp.values() if isinstance(v, dict)]
    )
    for flat in flats:
        if flat.get("original_max_position_embeddings") and not is_unrotated(flat):
            return int(flat["original_max_position_embeddings"]), "rope_parameters.original_max_position_embeddings"
    if getattr(config, "original_max_position_embeddings", None):
        return int(config.original_max_position_embeddings), "config original_max_position_embeddings"
    return int(config.max_position_embeddings), "config max_position_embeddings"


def build_stages(cfg: RunConfig, plan, target: int) -> list[Stage]:
    """Steps and micro-batch size per stage. Every stage consumes the same tokens per step (a
    shorter stage gets proportionally more sequences), so one LR schedule spans them all;
    "recalibrate" stages share extend.recalibrate_fraction of the steps, the others the rest."""
    total = resolve_steps(cfg, target)
    if cfg.extend.recalibrate_fraction == 0:
        plan = [s for s in plan if s.name != "recalibrate"]
    elif cfg.extend.recalibrate_fraction == 1 and any(s.name == "recalibrate" for s in plan):
        plan = [s for s in plan if s.name == "recalibrate"]  # DroPE as published: no training at the target
    is_recal = [s.name == "recalibrate" for s in plan]
    n_recal, n_rest = sum(is_recal), len(plan) - sum(is_recal)
    recal_steps = max(n_recal, round(cfg.extend.recalibrate_fraction * total)) if n_recal else 0
    if total - recal_steps < n_rest or (n_rest == 0 and recal_steps != total):
        raise UsageError(
            f"a budget of {total} steps is too small for the {len(plan)}-stage plan of "
            f"{cfg.extend.method}; give at least {n_recal + n_rest} steps"
        )
    budgets = {True: (recal_steps, n_recal), False: (total - recal_steps, n_rest)}
    seen = {True: 0, False: 0}
    stages = []
    for s, r in zip(plan, is_recal, strict=True):
        steps, n = budgets[r]
        share = steps // n + (1 if seen[r] < steps % n else 0)
        seen[r] += 1
        stages.append(Stage(s.name, s.seq_len, max(1, cfg.batch_size * target // s.seq_len), share))
    return stages


def eval_lengths(target: int) -> list[int]:
    """4k, 8k, ... up to and including the target (just the target if it is below 4k)."""
    n, out = 4096, []
    while n < target:
        out.append(n)
        n *= 2
    return out + [target]


def _temperature_plan(setting, base_len: int, target: int, fit: str = "nll") -> dict:
    from longctx.train.temperature import OBJECTIVES
    from rope_methods.drope import beta

    if setting == "auto":
        return {"c": f"auto (fitted after training: {OBJECTIVES[fit]} of held-out sequences at the target length)"}
    return {"c": setting, "beta": beta(setting, base_len, target)}


def with_rope(model, rope_parameters, max_position_embeddings: int):
    """The same weights in a model whose config carries the new position encoding."""
    from longctx.model import HybridLM, hf

    config = copy.deepcopy(model.config)
    config.rope_parameters = rope_parameters
    config.max_position_embeddings = max_position_embeddings
    with torch.device("meta"):
        new = HybridLM(config)
    hf.load_into(new, dict(model.state_dict()))
    new._source_dir = getattr(model, "_source_dir", None)
    return new


def load_model(model_dir: Path, spec: str):
    from longctx.model import HybridLM

    try:
        return HybridLM.from_pretrained(model_dir, dtype=torch.float32)  # fp32 master weights
    except UsageError as e:
        raise UsageError(f"--model {spec}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- truncated safetensors, bad header, ...
        raise UsageError(f"--model {spec}: cannot load its weights ({type(e).__name__}: {_first_line(e)})") from None


def _source_dtype(config) -> str | None:
    d = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(d).replace("torch.", "") if d is not None else None
    return name if name in ("float32", "bfloat16", "float16") else None


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    method = get_method(cfg.extend.method)
    target = cfg.extend.target
    if target is None:
        raise UsageError("no target length: pass --target N (e.g. 65536) or extend.target in the config")
    model_dir, mconfig = read_model_config(args.model)
    base_len, base_src = infer_base_len(cfg, model_dir, mconfig)
    if target <= base_len:
        raise UsageError(f"--target {target} must be greater than the base length {base_len} (from {base_src})")
    try:
        opts = method.options(**cfg.extend.rope)
        rope = method.extend(mconfig.rope_parameters, base_len=base_len, target_len=target, **cfg.extend.rope)
        plan = method.plan(base_len, target)
        max_pos = method.max_position_embeddings(base_len, target)
    except ValueError as e:
        raise UsageError(f"--method {method.name}: {e}") from None
    cfg.seq_len = target
    stages = build_stages(cfg, plan, target)
    export_dtype = cfg.export_dtype or _source_dtype(mconfig)
    dtype = parse_dtype(export_dtype)
    out = Path(args.out)
    total = sum(s.steps for s in stages)
    train_meta = {
        "kind": "extend",
        "seq_len": target,
        "base_len": base_len,
        "target": target,
        "method": method.name,
        "rope_parameters": rope,
        "source_model": str(args.model),
        **({"rope_options": opts} if opts else {}),
        "plan": [{"stage": s.name, "seq_len": s.seq_len, "steps": s.steps} for s in stages],
        "longctx_version": __version__,
    }
    prog = "longctx extend"
    from longctx.train.loop import resolve_device

    check_memory(
        stages,
        mconfig,
        resolve_device(cfg.device),
        flags=f"--target {target}: " + "{batch} x {seq_len} tokens",
        hint="give a smaller --target or --batch-size",
    )
    resume_point(out, args.resume, args.force, total, run_config=cfg.to_dict(), meta=train_meta, prog=prog)
    setting = opts.get("temperature") if method.name == "drope" else None
    fit = opts.get("temperature_fit") or "nll"

    if args.dry_run:
        print(
            yaml.safe_dump(
                {
                    "model": str(args.model),
                    "model_dir": str(model_dir),
                    "method": method.name,
                    "base_len": base_len,
                    "base_len_from": base_src,
                    "target": target,
                    "rope_parameters": {"before": mconfig.rope_parameters, "after": rope},
                    "max_position_embeddings": max_pos,
                    **({"rope_options": opts} if opts else {}),
                    **({"temperature": _temperature_plan(setting, base_len, target, fit)} if setting else {}),
                    "plan": [
                        {"stage": s.name, "seq_len": s.seq_len, "batch_size": s.batch_size, "steps": s.steps}
                        for s in stages
                    ],
                    "tokens_per_step": cfg.tokens_per_step(target),
                    "export_dtype": export_dtype or "float32",
                    "out": str(args.out),
                    "config": cfg.to_dict(),
                },
                sort_keys=False,
            ),
            end="",
        )
        return 0

    from longctx.data import load_tokenizer

    device = check_device(cfg.device)
    try:
        tokenizer = load_tokenizer(str(model_dir))
    except UsageError as e:
        raise UsageError(f"--model {args.model}: {e}") from None
    make_loader = loader_factory(cfg, tokenizer, **data_prefetch(device))
    check_data(make_loader, stages[0])
    probe = build_probe(cfg, tokenizer)
    answers = None
    if setting == "auto" and fit == "answer":  # drawn now (seconds): a target they do not fit fails before training
        from longctx.train.temperature import fit_batches

        answers = fit_batches(fit, cfg, tokenizer, target, stages[-1].batch_size)
    dims, device = start_parallel(args, stages, mconfig, device)
    from longctx.distributed import build_on_rank0
    from longctx.model import HybridLM

    def meta_twin():  # what the other ranks build: rank 0 alone reads the weights and broadcasts them
        twin = HybridLM(mconfig)
        twin._source_dir = model_dir
        return twin

    model = with_rope(build_on_rank0(lambda: load_model(model_dir, args.model), dims, meta_twin), rope, max_pos)
    do_eval = cfg.extend.eval

    # Validated: from here on OUT is written.
    ours = (EVAL_OUT, EVAL_OUT + ".partial.jsonl") if do_eval else ()  # stale answers of the old weights
    run = open_run_dir(
        dims, out, resume=args.resume, force=args.force, run_config=cfg.to_dict(), prog=prog, force_extra=ours
    )
    temperature = None
    if setting is not None:
        from longctx.train.temperature import DropeTemperature, fit_batches

        temperature = DropeTemperature(
            setting,
            base_len=base_len,
            target=target,
            fit=fit,
            heldout=lambda: answers or fit_batches(fit, cfg, tokenizer, target, stages[-1].batch_size),
        )
    try:
        torch.manual_seed(cfg.seed)
        rc = run_training(
            model,
            cfg,
            run,
            stages,
            make_loader,
            prog=prog,
            device=device,
            train_meta=train_meta,
            tokenizer=tokenizer,
            dims=dims,
            probe=probe,
            dtype=dtype,
            progress=not args.no_progress,
            temperature=temperature,
        )
        return rc if rc or not do_eval or not dims.is_main else run_eval(cfg, out, target)
    finally:
        run.release()


def run_eval(cfg: RunConfig, out: Path, target: int) -> int:
    """extend --eval: `longctx eval` at 4k..target into OUT/ruler.json, as one process (rank 0)."""
    from longctx.evaluate import eval_cmd

    lengths = ",".join(str(n) for n in eval_lengths(target))
    p = argparse.ArgumentParser(prog="longctx eval")
    eval_cmd.add_arguments(p)
    eval_args = ["--model", str(out), "--lengths", lengths, "--out", str(out / EVAL_OUT)]
    if cfg.device:
        eval_args += ["--device", cfg.device]
    print(f"longctx extend: evaluating: longctx eval {' '.join(eval_args)}", file=sys.stderr)
    return int(eval_cmd.run(p.parse_args(eval_args)) or 0)
