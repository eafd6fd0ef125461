"""`longctx summary RUN...`: summarise training runs from their metrics.jsonl, one row per (run, stage).

    longctx summary runs/base runs/drope-16k [--skip 2] [--json OUT.json] [--plot-probe OUT.png]

Prints a markdown table: steps, sequence length, tokens per step, median tokens/s and MFU (the
first --skip steps of each stage left out as warm-up), peak GPU memory, first/last loss, last
probe score. This is how the training figures in docs/benchmarks.md are read off a CLI run.
--plot-probe draws the learning curve of the in-training probe: one panel per probe task (at the
longest probed length) plus the mean answer NLL, one line per run, against tokens seen.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from longctx.errors import UsageError
from longctx.train.metrics import read_metrics, summarize


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def labels(runs: list[str]) -> list[str]:
    """Each run's shortest path suffix that no other run shares: its directory name unless that
    repeats (runs/a/base, runs/b/base -> a/base, b/base)."""
    parts = [Path(r).resolve().parts for r in runs]
    out = []
    for p in parts:
        k = 1
        while k < len(p) and sum(q[-k:] == p[-k:] for q in parts) > 1:
            k += 1
        out.append("/".join(p[-k:]))
    return out


def probe_series(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(tokens, value) per probe key: each task's accuracy at the longest length it was probed at
    (`probe/TASK@LEN`), and `probe/nll_mean`."""
    longest: dict[str, int] = {}
    for r in rows:
        for k in r:
            if k.startswith("probe/") and "@" in k and not k.startswith("probe/nll/"):
                task, n = k[len("probe/") :].rsplit("@", 1)
                longest[task] = max(longest.get(task, 0), int(n))
    keys = [f"probe/{t}@{n}" for t, n in sorted(longest.items())] + ["probe/nll_mean"]
    return {k: [(r["tokens"], r[k]) for r in rows if k in r] for k in keys if any(k in r for r in rows)}


def plot_probe(runs: dict[str, list[dict]], path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = {label: probe_series(rows) for label, rows in runs.items()}
    keys = list(dict.fromkeys(k for s in series.values() for k in s))
    if not keys:
        raise ValueError("no probe/* metrics in these runs (train with --probe-interval N)")
    cols = min(3, len(keys))
    nrows = -(-len(keys) // cols)
    fig = Figure(figsize=(4 * cols, 3 * nrows), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False).flatten()
    for ax, key in zip(axes, keys, strict=False):  # the grid's spare axes are hidden below
        for i, (label, s) in enumerate(series.items()):
            if s.get(key):
                x, y = zip(*s[key], strict=True)
                ax.plot([t / 1e6 for t in x], y, marker=".", color=f"C{i}", label=label)
        ax.set_title(key[len("probe/") :], fontsize="small")
        ax.set_xlabel("tokens (M)", fontsize="small")
        ax.set_ylabel("answer NLL" if key.endswith("nll_mean") else "accuracy %", fontsize="small")
        ax.grid(True, alpha=0.4)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl)")
    p.add_argument("--skip", type=int, default=2, help="warm-up steps left out of each stage's medians")
    p.add_argument("--json", help="also write the summaries here")
    p.add_argument("--plot-probe", metavar="OUT.png", help="also plot the in-training probe's learning curves")


def run(a) -> int:
    if a.skip < 0:
        raise UsageError(f"--skip {a.skip}: need 0 or more")
    table, dump, all_rows = [], {}, {}
    for run_dir, label in zip(a.runs, labels(a.runs), strict=True):
        rows = read_metrics(run_dir)
        if not rows:
            raise UsageError(f"{run_dir}: no metrics.jsonl rows")
        all_rows[label] = rows
        dump[run_dir] = summarize(rows, a.skip)
        for s in dump[run_dir]:
            table.append(
                f"| {label} | {s['stage']} | {s['steps']} | {s['seq_len']} | {s['tokens_per_step']} | "
                f"{s['tokens_per_s'] / 1e3:.1f}k | {fmt(s['mfu'] and 100 * s['mfu'], '.1f')} | "
                f"{fmt(s['peak_mem_gb'], '.1f')} | {s['loss_first']:.3f} -> {s['loss_last']:.3f} | "
                f"{fmt(s['probe_mean'], '.1f')} |"
            )
    print("| run | stage | steps | seq len | tokens/step | tokens/s | MFU % | peak GiB | loss | probe |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))
    if a.json:
        Path(a.json).write_text(json.dumps(dump, indent=1))
    if a.plot_probe:
        try:
            plot_probe(all_rows, a.plot_probe)
        except ValueError as e:
            raise UsageError(f"--plot-probe: {e}") from None
    return 0
