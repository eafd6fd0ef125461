"""Training throughput, ours (HybridLM + chunked CE) against transformers (the peer) and fla's own model, side by side.

On the GPU machine (one H100; repo root; fla installed), one call of at most 10 minutes:

    OUT=${OUT:-./bench_out} python bench/train_throughput.py --configs hybrid-1b,transformer-1b

fla's own hybrid model as a third implementation (hybrid configs; needs fla, a CUDA device):

    OUT=${OUT:-./bench_out} python bench/train_throughput.py --configs hybrid-1b --lengths 16384 --impl ours,peer,fla

CPU smoke test (seconds):

    python bench/train_throughput.py --device cpu --configs hybrid-tiny --lengths 256 --steps 2 --warmup 1

What one step is, for every implementation: batch --batch x T random tokens (the same tokens for
all, seeded per length), forward, next-token loss over T-1 positions, backward, AdamW step
(fused on CUDA, same hyper-parameters), activation checkpointing of every block. Precision
`bf16` (default): bf16 weights, gradients and optimizer states, no autocast; `amp`: fp32 weights
under bf16 autocast (what `longctx pretrain` does).
- ours: `longctx.model.HybridLM`, `gradient_checkpointing = True`, loss through
  `longctx.train.loss.chunked_cross_entropy` (logits never built whole), `--ce auto` as `longctx pretrain`
  (each chunk's softmax gradient in fla's fused CE kernels on CUDA with fla, `chunked-fla`; else `chunked`,
  in place in PyTorch); `--ce compiled` makes it through torch.compile; `--ce fla` uses fla's
  fused linear cross-entropy instead; `--no-fused-ce` builds the logits and uses F.cross_entropy; `--attn-backend`
forces an attention kernel (through
  LONGCTX_ATTN_BACKEND); `--gdn-backend` forces the GDN kernel; `--compile` compiles each block;
  RMSNorm and SwiGLU run through fla's fused kernels when fla is installed (`--plain-elementwise`
  for the plain-PyTorch ablation, `--fused-elementwise` to require them).
- peer: `transformers.AutoModelForCausalLM.from_config(config)` (OlmoHybridForCausalLM /
  Olmo3ForCausalLM, its default attention implementation, fla kernels when importable),
  `gradient_checkpointing_enable(use_reentrant=False)`, its own loss via `labels=input_ids`.
- fla: fla's own hybrid, `fla.models.GatedDeltaNetForCausalLM(GatedDeltaNetConfig(...))` with our
  config's shapes (bench/fla_peer.py maps them: attention at our full_attention layer indices, heads,
  head dims, GDN value expansion, conv width, SwiGLU width, vocab, tying), fused RMSNorm and SwiGLU, its
  own loss via `labels=input_ids` through `--fla-ce`: fla's fused linear CE (default), its fused CE over
  logits, or plain; `gradient_checkpointing_enable(use_reentrant=False)` kept on exactly the blocks ours
  checkpoints (`--checkpoint-fraction` and `--no-checkpointing` apply to it too). fla's Attention calls
  flash-attn; without flash-attn `--fla-attn auto` hands it torch SDPA (is_causal), the kernel ours
  takes there. Olmo 3 configs are not mapped (their fla rows read "skipped"). What fla's model cannot
  match of ours (post-norm attention blocks, QK-norm, ...) is listed in bench/fla_peer.py and, per
  config, in the JSON's meta.fla_peer[config].differences, beside both parameter counts.

Reported per (config, implementation, T): tokens/s = batch*T / median step time over --steps
timed steps (after --warmup steps; the first fla backward of a new shape compiles a kernel for
~15 s), MFU = HybridLM.flops_per_token(T) * tokens/s / 989e12 (dense bf16 peak of an H100/H200;
T / docs with `--docs`: attention only within a document),
where flops_per_token (ours, for every implementation) counts model FLOPs only: 6 x matmul
parameters (lm head included, input embedding excluded) + attention scores 12*H*Dh*ctx per
attention layer (causal mean context, sliding windows honoured) + 18*HV*Dk*Dv per GDN layer;
the recomputation of activation checkpointing, norms, convs and the optimizer are NOT counted
(so MFU is "model FLOPs utilisation", the same numerator for every implementation). Peak memory =
torch.cuda.max_memory_allocated over the timed steps. An out-of-memory error is reported as
"OOM" and the run goes on. Results go to $OUT/train_throughput.json (written after every
measurement); the table is printed last.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fla_peer  # noqa: E402
from _common import (
    add_fused_arg,
    add_run_args,
    add_varlen_arg,
    apply_fused_arg,
    apply_varlen_arg,
    free,
    is_oom,
    parse_lengths,
    parse_list,
    profile_once,
    versions,
)  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from longctx.config import LOSS_BACKENDS  # noqa: E402
from longctx.env import ATTN_BACKENDS as ENV_ATTN_BACKENDS  # noqa: E402
from longctx.env import GDN_BACKENDS  # noqa: E402

IMPLS = ("ours", "peer", "fla")
ATTN_BACKENDS = tuple(b for b in ENV_ATTN_BACKENDS if b != "sdpa_docs")  # sdpa_docs: inference only
PRECISIONS = ("bf16", "amp")
PEAK_FLOPS = 989e12
FLOPS_NOTE = (
    "MFU = HybridLM.flops_per_token(T / docs) * tokens/s / 989e12. flops_per_token = 6 x matmul params "
    "(lm head incl., input embedding excl.) + 12*H*Dh*ctx per attention layer (causal mean context, "
    "sliding window honoured) + 18*HV*Dk*Dv per GDN layer; checkpoint recomputation, norms, convs "
    "and the optimizer are not counted; same numerator (ours) for every implementation."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="hybrid-1b", help="model configs (configs/models names), comma-separated")
    p.add_argument("--config", dest="configs", help="alias of --configs")
    p.add_argument("--lengths", default="4096,16384,65536", help="sequence lengths, comma-separated (k suffix ok)")
    p.add_argument("--batch", type=int, default=1, help="sequences per step")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument(
        "--impl",
        default="ours,peer",
        help="ours, peer (transformers), fla (fla's own GatedDeltaNetForCausalLM), comma-separated",
    )
    p.add_argument("--device", default="cuda", help="cuda or cpu (smoke test)")
    p.add_argument("--precision", default="bf16", choices=PRECISIONS)
    p.add_argument("--compile", action="store_true", help="ours: torch.compile each block")
    p.add_argument("--no-fused-ce", action="store_true", help="ours: full logits + F.cross_entropy")
    add_fused_arg(p)
    p.add_argument("--ce-chunk", type=int, default=4096, help="ours: tokens per chunked-CE chunk")
    p.add_argument(
        "--ce",
        default="auto",
        choices=LOSS_BACKENDS,
        help="ours: cross-entropy over the head: as `longctx pretrain` (auto), ours chunked, chunked with "
        "torch.compile'd softmax gradient, chunked with fla's fused CE kernels for the softmax gradient, or "
        "fla's fused linear CE",
    )
    p.add_argument("--attn-backend", default=None, choices=ATTN_BACKENDS, help="ours: force this attention kernel")
    add_varlen_arg(p, "packed and sliding-window attention (one document per row stays on cuDNN's SDPA)")
    p.add_argument(
        "--docs",
        type=int,
        default=1,
        help="ours: pack each sequence as this many equal documents (cu_seqlens; attention and GDN see document "
        "boundaries, as packed pretraining does); default 1",
    )
    p.add_argument("--gdn-backend", default=None, choices=GDN_BACKENDS, help="ours: force this GDN kernel")
    p.add_argument("--no-checkpointing", action="store_true", help="all: no activation checkpointing")
    p.add_argument(
        "--checkpoint-fraction",
        type=float,
        default=None,
        metavar="F",
        help="ours and fla: checkpoint only this fraction of the blocks, GDN blocks first (the peer keeps all)",
    )
    p.add_argument(
        "--fla-ce",
        default="linear",
        choices=fla_peer.CE_CHOICES,
        help="fla: its loss, fused linear CE (fuse_linear_cross_entropy), fused CE over logits "
        "(fuse_cross_entropy) or nn.CrossEntropyLoss",
    )
    p.add_argument(
        "--fla-attn",
        default="auto",
        choices=fla_peer.ATTN_CHOICES,
        help="fla: the kernel its Attention runs, flash-attn (as fla ships), torch SDPA in its place, or "
        "auto (flash-attn when installed)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="after timing, profile one more step of each cell: OUT/profile_<cell>.txt "
        "(top ops, kernel vs wall time) + trace",
    )
    add_run_args(p)
    return p


def validate(args) -> None:
    args.configs = parse_list(args.configs)
    args.lengths = parse_lengths(args.lengths)
    args.impl = parse_list(args.impl)
    bad = [i for i in args.impl if i not in IMPLS]
    if bad or not args.impl:
        sys.exit(f"--impl {bad or args.impl}: accepted: {', '.join(IMPLS)}")
    if not args.lengths or min(args.lengths) < 2:
        sys.exit(f"--lengths {args.lengths}: need lengths >= 2")
    if args.steps < 1 or args.warmup < 0 or args.batch < 1:
        sys.exit("--steps >= 1, --warmup >= 0 and --batch >= 1 required")
    if args.docs < 1 or args.docs > min(args.lengths) or (args.docs > 1 and args.impl != ["ours"]):
        sys.exit(f"--docs {args.docs}: need 1..{min(args.lengths)} (the shortest length), and --impl ours alone")
    if args.checkpoint_fraction is not None and (not 0 <= args.checkpoint_fraction <= 1 or args.no_checkpointing):
        sys.exit(f"--checkpoint-fraction {args.checkpoint_fraction}: need 0..1, and not with --no-checkpointing")
    if args.device not in ("cuda", "cpu") and not args.device.startswith("cuda:"):
        sys.exit(f"--device {args.device!r}: accepted: cuda, cuda:N, cpu")
    if "fla" in args.impl:
        why = fla_peer.missing("cpu" if args.device == "cpu" else "cuda")
        if why:
            sys.exit(f"--impl fla: {why}")


# ---------------------------------------------------------------- models


def checkpoint_setting(args) -> bool | float:
    """Ours' `gradient_checkpointing`: False, True (every block) or the fraction (hybrid.checkpointed_blocks)."""
    if args.no_checkpointing:
        return False
    return args.checkpoint_fraction if args.checkpoint_fraction is not None else True


def build_ours(config, device, dtype, args):
    import torch

    from longctx.model import HybridLM

    with torch.device(device):
        model = HybridLM(config, gdn_backend=args.gdn_backend)
    model = model.to(dtype).train()
    model.gradient_checkpointing = checkpoint_setting(args)
    if args.compile:
        for layer in model.model.layers:
            layer.compile(dynamic=False)
    return model, {}


def build_peer(config, device, dtype, args):
    import torch
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(config)
    cfg.use_cache = False
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model = model.to(device=device, dtype=dtype).train()
    if not args.no_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, {}


def build_fla(config, device, dtype, args):
    """fla's GatedDeltaNetForCausalLM with our config's shapes, checkpointing the blocks ours checkpoints."""
    from longctx.model.hybrid import checkpointed_blocks

    blocks = checkpointed_blocks(config.layer_types, checkpoint_setting(args))
    return fla_peer.build(config, device, dtype, ce=args.fla_ce, attn=args.fla_attn, checkpointed=blocks)


BUILDERS = {"ours": build_ours, "peer": build_peer, "fla": build_fla}  # each returns (model, fields for the row)


def doc_bounds(ids, docs: int):
    """cu_seqlens of `docs` equal documents in each row of ids [B, T] (the last takes the remainder), or None."""
    import torch

    if docs <= 1:
        return None
    B, T = ids.shape
    row = [T * i // docs for i in range(docs)]
    return torch.tensor([b * T + r for b in range(B) for r in row] + [B * T], dtype=torch.int32, device=ids.device)


def make_step(impl, model, opt, ids, labels, autocast, args):
    import torch.nn.functional as F

    from longctx.data.packing import IGNORE_INDEX
    from longctx.train.loss import make_loss_fn

    loss_fn = make_loss_fn(args.ce, chunk=args.ce_chunk, device=ids.device)

    cu = doc_bounds(ids, args.docs)

    def step_ours():
        with autocast():
            hidden = model.forward_hidden(ids, cu_seqlens=cu)
            if args.no_fused_ce:
                logits = model.lm_head(hidden)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
            else:
                parts = loss_fn(hidden, model.lm_head.weight, labels)
                loss = parts.total / parts.count
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def step_peer():  # transformers' model and fla's alike: their own loss, labels shifted inside
        with autocast():
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step_ours if impl == "ours" else step_peer


def measure(impl, config, T, args, device, label: str = "model") -> dict:
    import torch

    from longctx.data.packing import IGNORE_INDEX

    dtype = torch.bfloat16
    param_dtype = dtype if args.precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(args.seed + T)
    ids = torch.randint(0, config.vocab_size, (args.batch, T), generator=gen).to(device)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, :-1] = ids[:, 1:]  # transformers and fla shift labels=input_ids the same way

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)  # the same initial weights for a cell run twice (and across --docs)
    model, info = BUILDERS[impl](config, device, param_dtype, args)
    build_s = time.perf_counter() - t0
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1, fused=fused or None)

    if args.precision == "amp":

        def autocast():
            return torch.autocast(device.type, dtype=dtype)
    else:
        from contextlib import nullcontext as autocast
    step = make_step(impl, model, opt, ids, labels, autocast, args)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, loss = [], None
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    row = {
        "status": "ok",
        "tokens_per_s": args.batch * T / med,
        "step_s_median": med,
        "step_s": times,
        "loss": float(loss),
        "build_s": build_s,
        "warmup_s": warmup_s,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        **info,
    }
    if args.profile:
        row["profile"] = profile_once(step, args.out, f"{label}_{impl}_{T}", device)
    if impl == "peer":
        row["peer_class"] = type(model).__name__
        row["peer_attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    elif impl == "ours":
        from longctx.model import gdn, rope_kernel

        has_gdn = any(hasattr(layer, "linear_attn") for layer in model.model.layers)
        auto = "fla" if device.type == "cuda" and gdn.fla_ops() else "torch"
        row["ours_gdn_backend"] = (args.gdn_backend or gdn.default_backend() or auto) if has_gdn else None
        row["ours_attn_backend"] = args.attn_backend or "auto (attention.select_backend)"
        row["ours_fused_elementwise"] = args.fused_elementwise_state
        row["ours_fused_rope"] = rope_kernel.available()  # on CUDA: the kernel rotates q/k
        from longctx.train.loss import resolve_backend

        row["ours_loss_backend"] = resolve_backend(args.ce, device)
        from longctx.model.hybrid import checkpointed_blocks

        row["ours_checkpointed_blocks"] = sorted(
            checkpointed_blocks(model.config.layer_types, model.gradient_checkpointing)
        )
    return row


# ---------------------------------------------------------------- report


def fmt(x, spec, suffix=""):
    return "-" if x is None else f"{x:{spec}}{suffix}"


def cell(row, key):
    if row is None:
        return "-"
    if row["status"] != "ok":
        return row["status"] if row["status"] in ("OOM", "skipped") else "error"
    if key == "tokens_per_s":
        return fmt(row[key], ",.0f")
    if key == "mfu":
        return fmt(None if row[key] is None else 100 * row[key], ".1f", "%")
    return fmt(row[key], ".1f")


def table(results: list[dict], impls: list[str]) -> str:
    keys = sorted({(r["config"], r["seq_len"]) for r in results}, key=lambda k: (k[0], k[1]))
    by = {(r["config"], r["seq_len"], r["impl"]): r for r in results}
    head = ["config", "T"]
    for metric in ("tok/s", "MFU", "peak GiB"):
        head += [f"{i} {metric}" for i in impls]
    peers = [i for i in impls if i != "ours"] if "ours" in impls else []
    head += [f"ours/{i}" for i in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cfg, T in keys:
        cols = [cfg, str(T)]
        for key in ("tokens_per_s", "mfu", "peak_mem_gib"):
            cols += [cell(by.get((cfg, T, i)), key) for i in impls]
        for peer in peers:
            o, p = by.get((cfg, T, "ours")), by.get((cfg, T, peer))
            ok = o and p and o["status"] == "ok" and p["status"] == "ok"
            cols.append(f"{o['tokens_per_s'] / p['tokens_per_s']:.2f}x" if ok else "-")
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    validate(args)
    args.fused_elementwise_state = apply_fused_arg(args)
    if args.attn_backend:
        os.environ["LONGCTX_ATTN_BACKEND"] = args.attn_backend  # attention.py reads it at each call
    apply_varlen_arg(args)
    import torch

    from longctx.model import HybridLM, attention, load_config, optional

    if args.attn_backend:
        if args.attn_backend == "flash" and not attention._flash_fns():
            sys.exit("--attn-backend flash: flash-attn is not installed; accepted here: sdpa, flex, fla, math")
        if args.attn_backend == "fla" and not optional.load("fla.ops.attn:parallel_attn"):
            sys.exit("--attn-backend fla: flash-linear-attention is not installed; accepted here: sdpa, flex, math")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device; use --device cpu for the smoke test")
    if "fla" in args.impl and args.fla_attn == "flash" and not attention._flash_fns():
        sys.exit("--fla-attn flash: flash-attn is not installed; accepted here: auto, sdpa")
    from longctx.errors import UsageError

    try:
        configs = {name: load_config(name) for name in args.configs}  # fail on a bad name before any work
    except UsageError as e:
        sys.exit(f"--configs: {e}")

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / "train_throughput.json"
    peak = PEAK_FLOPS if device.type == "cuda" else None
    meta = {
        "script": "bench/train_throughput.py",
        "argv": sys.argv[1:],
        "args": {k: v for k, v in vars(args).items()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": versions(),
        "peak_flops": peak,
        "flops_counted": FLOPS_NOTE,
        "attn_backend_forced": args.attn_backend,
        "impls": {
            "ours": "longctx.model.HybridLM",
            "peer": "transformers AutoModelForCausalLM.from_config (OlmoHybrid / Olmo3)",
            "fla": "fla.models.GatedDeltaNetForCausalLM, our shapes (bench/fla_peer.py)",
        },
        "step": "fwd + next-token loss + bwd + AdamW step, batch x T random tokens, "
        + ("activation checkpointing per block" if not args.no_checkpointing else "no checkpointing")
        + f", precision {args.precision}",
    }
    results: list[dict] = []

    def save():
        out_file.write_text(json.dumps({"meta": meta, "results": results}, indent=2))

    start = time.perf_counter()
    for name, config in configs.items():
        with torch.device("meta"):
            counter = HybridLM(config)  # only for flops_per_token and parameter counts
        meta.setdefault("params", {})[name] = {
            "total": counter.num_params(),
            "non_embedding": counter.num_params(exclude_embeddings=True),
        }
        if "fla" in args.impl:  # the mapping, both parameter counts and what fla cannot match
            meta.setdefault("fla_peer", {})[name] = fla_peer.describe(config, args.fla_ce)
        for T in args.lengths:
            fpt = counter.flops_per_token(T // args.docs)  # attention sees one document
            for impl in args.impl:
                row = {"config": name, "impl": impl, "seq_len": T, "batch": args.batch, "flops_per_token": fpt}
                if impl == "fla" and "error" in meta["fla_peer"][name]:
                    row["status"] = "skipped"
                    row["reason"] = meta["fla_peer"][name]["error"]
                elif time.perf_counter() - start > args.budget_s:
                    row["status"] = "skipped"
                    row["reason"] = f"time budget {args.budget_s:.0f} s spent"
                else:
                    print(f"[{time.perf_counter() - start:6.0f}s] {name} T={T} {impl} ...", file=sys.stderr, flush=True)
                    try:
                        row.update(measure(impl, config, T, args, device, label=name))
                    except Exception as e:  # noqa: BLE001 - one failed cell must not end the run
                        if is_oom(e):
                            row["status"] = "OOM"
                        else:
                            row["status"] = "error"
                            row["error"] = f"{type(e).__name__}: {e}"[:2000]
                            traceback.print_exc()
                    free(device)
                row["mfu"] = fpt * row["tokens_per_s"] / peak if peak and row.get("status") == "ok" else None
                row.setdefault("tokens_per_s", None)
                row.setdefault("peak_mem_gib", None)
                results.append(row)
                save()
                msg = f"{row['tokens_per_s']:,.0f} tok/s" if row["status"] == "ok" else row["status"]
                print(f"    -> {msg}" + (f" ({row['error']})" if row.get("error") else ""), file=sys.stderr, flush=True)

    print(
        f"\nDevice: {meta['device']}; torch {meta['versions']['torch']}, transformers "
        f"{meta['versions']['transformers']}, fla {meta['versions']['fla']}; precision {args.precision}; "
        f"batch {args.batch}; median of {args.steps} steps after {args.warmup} warm-up."
    )
    ablations = [
        s
        for s, on in (
            ("--compile", args.compile),
            ("--no-fused-ce", args.no_fused_ce),
            ("--fused-elementwise", args.fused_elementwise),
            ("--plain-elementwise", args.plain_elementwise),
            ("--fused-rope", args.fused_rope),
            ("--plain-rope", args.plain_rope),
            (f"--ce {args.ce}", args.ce != "auto"),
            (f"--attn-backend {args.attn_backend}", args.attn_backend),
            (f"--docs {args.docs}", args.docs > 1),
            ("--varlen-attention", args.varlen_attention),
            (f"--gdn-backend {args.gdn_backend}", args.gdn_backend),
            ("--no-checkpointing", args.no_checkpointing),
            (f"--checkpoint-fraction {args.checkpoint_fraction}", args.checkpoint_fraction is not None),
        )
        if on
    ]
    if ablations:
        print("Ours with: " + " ".join(ablations))
    if "fla" in args.impl:
        print(f"fla: --fla-ce {args.fla_ce} --fla-attn {args.fla_attn}; shapes and differences: JSON meta.fla_peer")
    print(FLOPS_NOTE if peak else "MFU: not reported (no CUDA peak for this device).")
    print(f"JSON: {out_file}\n")
    print(table(results, args.impl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
