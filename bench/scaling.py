"""Multi-GPU scaling of `longctx extend`: one prepared command per (dp x cp) layout, one table.

    # 2 GPUs: cp=2 against one GPU at 64k, then the longest context with cp=2
    python bench/scaling.py --config hybrid-1b --target 65536 --layouts 1x1,1x2 --steps 20 --batch-size 1
    # 8 GPUs: 128k, dp x cp = 2x4 and 4x2, against the 1- and 2-GPU figures
    python bench/scaling.py --config hybrid-1b --target 131072 --layouts 1x2,2x4,4x2 --steps 50 --batch-size 4

For each layout DxC it runs `torchrun --standalone --nproc-per-node D*C -m longctx extend --method M
--target T --model BASE --dp D --cp C --grad-checkpointing --out OUT/dDcC` (a plain process for
1x1). The global batch is the same for every layout, so each layout trains on the same data and
its loss curve should match the first layout's up to floating-point order; the table gives the
largest step-wise loss difference from that reference. BASE is --base, or a one-step pretrain of
--config written once to OUT/base. A layout whose OUT already holds a finished export is not run
again, and one stopped by SIGTERM (it checkpoints) continues from its checkpoint: rerunning the same
command resumes a study cut short, e.g. by a 10-minute job limit. A layout that fails (out of memory,
a bad layout) is reported as such and the rest still run.

Per layout, for the target-length stage (the last stage of the method's plan), from metrics.jsonl:
tokens/s for all GPUs and per GPU, MFU per GPU, peak memory (rank 0), and scaling efficiency =
(tokens/s per GPU) / (tokens/s per GPU of the first layout in --layouts).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import length_arg  # noqa: E402

from longctx.distributed.launcher import die_with_parent  # noqa: E402
from longctx.train.checkpoint import latest_checkpoint
from longctx.train.metrics import read_metrics, summarize


def parse_layouts(text: str) -> list[tuple[int, int]]:
    """'1x1,2x4' -> [(1, 1), (2, 4)] (dp x cp)."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            d, c = (int(x) for x in item.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--layouts {item!r}: expected DPxCP, e.g. 2x4") from None
        if d < 1 or c < 1:
            raise SystemExit(f"--layouts {item!r}: degrees must be >= 1")
        out.append((d, c))
    if not out:
        raise SystemExit("--layouts: give at least one DPxCP layout")
    return out


def layout_name(d: int, c: int) -> str:
    return f"d{d}c{c}"


def extend_cmd(args, base: Path, d: int, c: int, out: Path) -> list[str]:
    n = d * c
    head = [sys.executable, "-m", "longctx"]
    if n > 1:  # --standalone: a local rendezvous on a free port
        head = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(n),
            "-m",
            "longctx",
        ]
    # a layout stopped part-way (SIGTERM: it checkpointed) continues from its checkpoint; else it starts over
    again = "--resume" if latest_checkpoint(out) is not None else "--force"
    cmd = [
        *head,
        "extend",
        "--method",
        args.method,
        "--target",
        str(args.target),
        "--model",
        str(base),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--out",
        str(out),
        again,
        "--device",
        args.device,
        "--no-progress",
    ]
    if n > 1:
        cmd += ["--dp", str(d), "--cp", str(c)]
    if not args.no_grad_checkpointing:
        cmd.append("--grad-checkpointing")
    return cmd + args.extra


def loss_gap(ref: list[dict], rows: list[dict]) -> float | None:
    """Largest |loss difference| over the steps both runs logged."""
    a = {r["step"]: r["loss"] for r in ref}
    common = [(a[r["step"]], r["loss"]) for r in rows if r["step"] in a]
    return max(abs(x - y) for x, y in common) if common else None


def summarise(layouts, results: dict) -> list[dict]:
    """Rows of the table: the last stage of each finished layout against the first layout."""
    table, ref = [], None
    for d, c in layouts:
        name = layout_name(d, c)
        res = results[name]
        row = {"layout": f"{d}x{c}", "gpus": d * c, "status": res["status"]}
        if res["status"] == "ok":
            stage = res["stages"][-1]
            last = [r for r in res["rows"] if r["stage"] == stage["stage"]]
            per_gpu = stage["tokens_per_s"] / (d * c)
            if ref is None:
                ref = (per_gpu, last)
            row.update(
                seq_len=stage["seq_len"],
                tokens_per_s=stage["tokens_per_s"],
                tokens_per_s_per_gpu=per_gpu,
                mfu=stage["mfu"],
                peak_mem_gb=stage["peak_mem_gb"],
                efficiency=per_gpu / ref[0],
                max_loss_gap=loss_gap(ref[1], last),
                loss_last=stage["loss_last"],
            )
        table.append(row)
    return table


def markdown(table: list[dict]) -> str:
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    lines = [
        "| layout (dp x cp) | GPUs | T | tok/s | tok/s/GPU | MFU/GPU | peak GiB | efficiency | max loss gap | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['layout']} | {r['gpus']} | {f(r.get('seq_len'), 'd')} | {f(r.get('tokens_per_s'), ',.0f')} | "
            f"{f(r.get('tokens_per_s_per_gpu'), ',.0f')} | {f(r.get('mfu') and 100 * r['mfu'], '.1f')} | "
            f"{f(r.get('peak_mem_gb'), '.1f')} | {f(r.get('efficiency'), '.2f')} | "
            f"{f(r.get('max_loss_gap'), '.1e')} | {r['status']} |"
        )
    return "\n".join(lines)


def run_logged(cmd: list[str], log: Path) -> int:
    """Run one layout, output to `log`; its return code.

    The layout runs in a session of its own and gets SIGTERM when this script dies, even by SIGKILL
    (PR_SET_PDEATHSIG). SIGTERM or SIGINT to this script is passed on as SIGTERM (torchrun passes it to
    its workers, which finish the step, checkpoint and exit), then this script waits for the layout and
    exits 128 + the signal: a stopped study leaves no process on the GPUs. Rerunning it keeps the finished
    layouts and continues the stopped one from the checkpoint it wrote."""
    stop = []
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

        def forward(signum, frame):
            stop.append(signum)
            proc.send_signal(signal.SIGTERM)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            rc = proc.wait()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    if stop:
        print(
            f"scaling: stopped by {signal.Signals(stop[0]).name}; the layout checkpointed and exited {rc}; "
            "rerun the same command: finished layouts are kept, this one resumes",
            file=sys.stderr,
        )
        raise SystemExit(128 + stop[0])
    return rc


def ensure_base(args, out: Path) -> Path:
    if args.base:
        return Path(args.base)
    base = out / "base"
    if not (base / "config.json").exists():
        cmd = [
            sys.executable,
            "-m",
            "longctx",
            "pretrain",
            "--model",
            args.config,
            "--steps",
            "1",
            "--seq-len",
            str(args.base_seq_len),
            "--batch-size",
            "1",
            "--out",
            str(base),
            "--force",
            "--device",
            args.device,
            "--no-progress",
        ]
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        if args.dry_run:
            return base
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"scaling: the base pretrain of {args.config} failed")
    return base


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--base", help="base model directory (HF export) to extend")
    src.add_argument("--config", help="model config (configs/models name): a one-step pretrain makes the base")
    p.add_argument("--method", default="drope")
    p.add_argument("--target", type=length_arg, required=True, help="target context length (65536 or 64k)")
    p.add_argument("--layouts", required=True, help="DPxCP layouts, comma-separated; the first is the reference")
    p.add_argument("--steps", type=int, default=20, help="extend steps per layout")
    p.add_argument("--batch-size", type=int, default=1, help="global sequences per step (the same for every layout)")
    p.add_argument("--base-seq-len", type=length_arg, default=4096, help="base context length (4096 or 4k)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--no-grad-checkpointing", action="store_true")
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT") or "runs", "scaling"))
    p.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    p.add_argument("extra", nargs="*", help="after --: more `longctx extend` arguments (e.g. --set lr=1e-5)")
    args = p.parse_args(argv)
    layouts = parse_layouts(args.layouts)
    bad = [f"{d}x{c}" for d, c in layouts if args.batch_size % d]
    if bad:
        p.error(f"--batch-size {args.batch_size}: not divisible by the dp degree of {', '.join(bad)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = ensure_base(args, out)

    results = {}
    for d, c in layouts:
        name = layout_name(d, c)
        run = out / name
        cmd = extend_cmd(args, base, d, c, run)
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        if args.dry_run:
            continue
        rows = read_metrics(run) if (run / "config.json").exists() else []
        status, seconds = "ok", None  # finished before (an export and its metrics): reuse
        if not rows:
            t0 = time.perf_counter()
            log = out / f"{name}.log"
            rc = run_logged(cmd, log)
            seconds = time.perf_counter() - t0
            text = log.read_text(errors="replace")
            status = "ok" if rc == 0 else ("OOM" if "out of memory" in text.lower() else f"exit {rc} (see {log.name})")
            rows = read_metrics(run) if status == "ok" else []
            if status == "ok" and not rows:
                status = "no metrics"
        results[name] = {
            "status": status,
            "seconds": seconds,
            "cmd": cmd,
            "rows": rows,
            "stages": summarize(rows) if rows else [],
        }
    if args.dry_run:
        return 0
    table = summarise(layouts, results)
    (out / "scaling.json").write_text(
        json.dumps(
            {"args": vars(args), "table": table, "runs": {k: {**v, "rows": None} for k, v in results.items()}}, indent=1
        )
    )
    print(
        f"\n{args.method} to {args.target} from {base}, {args.steps} steps, global batch {args.batch_size}; "
        f"efficiency and loss gap against {layouts[0][0]}x{layouts[0][1]}. JSON: {out / 'scaling.json'}\n"
    )
    print(markdown(table))
    return 0 if all(r["status"] == "ok" for r in table) else 1


if __name__ == "__main__":
    raise SystemExit(main())
