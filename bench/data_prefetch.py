"""What batch-making costs a host-bound training step, by where it runs (CPU only, seconds).

A small model's GPU step is host-bound: its time is the Python that launches the kernels. This
stands in for that with a fixed amount of pure-Python work per step (`--host-ms`, calibrated on this
machine) and takes one real batch per step from a study's pretraining loader (its corpus mix, seq_len
and batch size), with the batch made inline, in a thread (prefetch 2) or in a forked process
(prefetch 2). The step time over the host-only time is what the data costs the step.

    python bench/data_prefetch.py [--study configs/experiments/study-20m.yaml] [--model hybrid]
                                  [--steps 20] [--rounds 3] [--host-ms 150]

It does not measure a GPU step: how much of a real step this is depends on how host-bound it is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_run_args, versions  # noqa: E402


def _spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i & 7
    return x


def calibrate(ms: float) -> int:
    """Loop count of `_spin` that takes about `ms` milliseconds here."""
    n = 100_000
    t = time.perf_counter()
    _spin(n)
    return max(1, int(n * ms / 1000 / (time.perf_counter() - t)))


def step_ms(make, spin: int, steps: int, data: bool) -> list[float]:
    """Per-step milliseconds of `steps` steps (host work, then the next batch if `data`)."""
    it = iter(make())
    next(it)  # start-up (a worker's first batch) is not a step
    time.sleep(0.5)  # let a worker fill its queue, as it does during the first training steps
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        _spin(spin)
        if data:
            next(it)
        times.append((time.perf_counter() - t) * 1000)
    it.close()
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default="configs/experiments/study-20m.yaml")
    p.add_argument("--model", default="hybrid", help="which of the study's models' pretraining config")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--host-ms", type=float, default=150.0, help="pure-Python host work per step")
    p.add_argument("--rounds", type=int, default=3, help="times each mode runs --steps steps, interleaved")
    add_run_args(p)
    args = p.parse_args(argv)

    from longctx import study as st
    from longctx.config import from_dict
    from longctx.data import load_tokenizer
    from longctx.train.data import loader_factory
    from longctx.train.pretrain_cmd import pretrain_stages

    cfg = from_dict(st.pretrain_config(st.load_study(args.study), args.model))
    stage = pretrain_stages(cfg, cfg.steps)[-1]
    tok = load_tokenizer(cfg.data.tokenizer)
    spin = calibrate(args.host_ms)
    modes = {
        "host work only": ({}, False),
        "inline": ({}, True),
        "thread, prefetch 2": ({"prefetch": 2, "prefetch_in": "thread"}, True),
        "process, prefetch 2": ({"prefetch": 2, "prefetch_in": "process"}, True),
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.rounds):  # the modes interleaved, so that drift of a shared machine hits them alike
        for name, (kw, data) in modes.items():
            times[name] += step_ms(lambda kw=kw: loader_factory(cfg, tok, **kw)(stage), spin, args.steps, data)
    rows = [{"mode": name, "step_ms": round(statistics.median(t), 1), "steps": len(t)} for name, t in times.items()]
    for r in rows:
        print(f"[{r['mode']}] {r['step_ms']:.1f} ms/step", file=sys.stderr, flush=True)
    base = rows[0]["step_ms"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "study": args.study,
        "model": args.model,
        "seq_len": stage.seq_len,
        "batch_size": stage.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "host_ms": args.host_ms,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
    }
    (out / "data_prefetch.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(
        f"\n{args.study} ({args.model}): {stage.batch_size} x {stage.seq_len} tokens a batch; "
        f"{args.host_ms:.0f} ms of pure-Python host work a step (calibrated); "
        f"median of {args.rounds} x {args.steps} steps.\n"
    )
    print("| batches made | ms/step | data's cost to the step |\n|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['step_ms']:.1f} | {r['step_ms'] - base:+.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
