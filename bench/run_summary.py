"""Summarise training runs from their metrics.jsonl: one row per (run, stage).

    python bench/run_summary.py runs/base runs/drope-16k [--skip 2] [--json OUT.json]

Prints a markdown table: steps, sequence length, tokens per step, median tokens/s and MFU (the
first --skip steps of each stage left out as warm-up), peak GPU memory, first/last loss, last
probe score. This is how the training figures in docs/benchmarks.md are read off a CLI run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from longctx.train.metrics import read_metrics, summarize


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl)")
    p.add_argument("--skip", type=int, default=2, help="warm-up steps left out of each stage's medians")
    p.add_argument("--json", help="also write the summaries here")
    a = p.parse_args(argv)
    table, dump = [], {}
    for run in a.runs:
        rows = read_metrics(run)
        if not rows:
            print(f"run_summary: {run}: no metrics.jsonl rows", file=sys.stderr)
            return 2
        dump[run] = summarize(rows, a.skip)
        for s in dump[run]:
            table.append(f"| {Path(run).name} | {s['stage']} | {s['steps']} | {s['seq_len']} | {s['tokens_per_step']} | "
                         f"{s['tokens_per_s'] / 1e3:.1f}k | {fmt(s['mfu'] and 100 * s['mfu'], '.1f')} | "
                         f"{fmt(s['peak_mem_gb'], '.1f')} | {s['loss_first']:.3f} -> {s['loss_last']:.3f} | "
                         f"{fmt(s['probe_mean'], '.1f')} |")
    print("| run | stage | steps | seq len | tokens/step | tokens/s | MFU % | peak GiB | loss | probe |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))
    if a.json:
        Path(a.json).write_text(json.dumps(dump, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
