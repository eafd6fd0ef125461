"""RULER results as tables (Markdown, CSV) and a score-vs-length plot.

Input is a list of validated results dicts (`longctx.evaluate.results.load`). A length's score
is the mean of the 13 RULER tasks; when some task is missing or unavailable the mean is over
the tasks that did run and the cell is marked `*`, with a footnote saying what is left out.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from statistics import fmean

from longctx.evaluate.lengths import format_length
from longctx.evaluate.results import RULER_TASKS, cell, rope_method, run_label

MISSING = "—"  # not run
UNAVAILABLE = "n/a"  # could not run here (e.g. QA data offline)


@dataclass
class LengthScore:
    mean: float | None  # None: no task scored at this length
    unavailable: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.unavailable or self.missing)


@dataclass
class Row:
    label: str
    cells: dict[int, LengthScore]  # every length of the table
    average: float | None
    average_partial: bool


def length_score(results: dict, length: int) -> LengthScore:
    scores, unavailable, missing = [], [], []
    for task in RULER_TASKS:
        entry = cell(results, task, length)
        if entry is None:
            missing.append(task)
        elif "unavailable" in entry:
            unavailable.append(task)
        else:
            scores.append(entry["score"])
    return LengthScore(fmean(scores) if scores else None, unavailable, missing)


def all_lengths(runs: list[dict]) -> list[int]:
    found = set()
    for r in runs:
        found.update(r["lengths"])
        for per_len in r["scores"].values():
            found.update(int(k) for k in per_len)
    return sorted(found)


def labels(runs: list[dict]) -> list[str]:
    """Row labels, numbered where two runs would otherwise share one."""
    base = [run_label(r) for r in runs]
    return [f"{b} [{i + 1}]" if base.count(b) > 1 else b for i, b in enumerate(base)]


def summary(runs: list[dict]) -> list[Row]:
    lengths = all_lengths(runs)
    rows = []
    for label, r in zip(labels(runs), runs):
        cells = {n: length_score(r, n) for n in lengths}
        present = [c for c in cells.values() if c.mean is not None]
        avg = fmean(c.mean for c in present) if present else None
        rows.append(Row(label, cells, avg, len(present) < len(cells) or any(c.partial for c in present)))
    return rows


def _fmt(x: float | None, partial: bool = False) -> str:
    return MISSING if x is None else f"{x:.1f}" + ("*" if partial else "")


def _md(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(r) + " |" for r in body]


def _footnotes(rows: list[Row]) -> list[str]:
    notes = []
    for row in rows:
        for n, c in row.cells.items():
            where = f"{row.label} {format_length(n)}"
            if c.mean is None:
                notes.append(f"- {where}: no results")
            elif c.partial:
                parts = [f"{len(RULER_TASKS) - len(c.missing) - len(c.unavailable)}/{len(RULER_TASKS)} tasks"]
                if c.unavailable:
                    parts.append("unavailable: " + ", ".join(c.unavailable))
                if c.missing:
                    parts.append("missing: " + ", ".join(c.missing))
                notes.append(f"- {where}: " + "; ".join(parts))
    if not notes:
        return []
    return ["", f"\\* mean over the tasks and lengths that ran, not all {len(RULER_TASKS)} tasks:", *notes]


def markdown_table(runs: list[dict]) -> str:
    """Rows: runs; columns: lengths + avg; cells: the 13-task mean."""
    rows = summary(runs)
    lengths = all_lengths(runs)
    header = ["model (method)", *(format_length(n) for n in lengths), "avg"]
    body = [
        [row.label, *(_fmt(row.cells[n].mean, row.cells[n].partial) for n in lengths),
         _fmt(row.average, row.average_partial)]
        for row in rows
    ]  # fmt: skip
    return "\n".join(_md(header, body) + _footnotes(rows)) + "\n"


def _task_cell(results: dict, task: str, length: int) -> str:
    entry = cell(results, task, length)
    if entry is None:
        return MISSING
    return UNAVAILABLE if "unavailable" in entry else f"{entry['score']:.1f}"


def per_task_markdown(runs: list[dict], by: str = "length") -> str:
    """Tasks as rows: one table per length (runs as columns) or per run (lengths as columns)."""
    if by not in ("length", "run"):
        raise ValueError(f"by must be 'length' or 'run', not {by!r}")
    lengths, names = all_lengths(runs), labels(runs)
    out = []
    if by == "length":
        for n in lengths:
            body = [[t, *(_task_cell(r, t, n) for r in runs)] for t in RULER_TASKS]
            means = [length_score(r, n) for r in runs]
            body.append(["mean", *(_fmt(m.mean, m.partial) for m in means)])
            out += [f"### {format_length(n)}", "", *_md(["task", *names], body), ""]
    else:
        for name, r in zip(names, runs):
            body = [[t, *(_task_cell(r, t, n) for n in lengths)] for t in RULER_TASKS]
            means = [length_score(r, n) for n in lengths]
            body.append(["mean", *(_fmt(m.mean, m.partial) for m in means)])
            out += [f"### {name}", "", *_md(["task", *map(format_length, lengths)], body), ""]
    out.append(f"{UNAVAILABLE}: could not run here (data unavailable); {MISSING}: not run.")
    return "\n".join(out) + "\n"


CSV_COLUMNS = ["run", "model", "method", "length", "task", "score", "samples", "status"]


def csv_text(runs: list[dict]) -> str:
    """One row per (run, length, task) plus a `mean` row per (run, length); status ok|partial|unavailable|missing."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    lengths = all_lengths(runs)
    for name, r in zip(labels(runs), runs):
        head = [name, r["model"], rope_method(r["rope_parameters"])]
        for n in lengths:
            for t in RULER_TASKS:
                e = cell(r, t, n)
                if e is None:
                    w.writerow([*head, n, t, "", "", "missing"])
                elif "unavailable" in e:
                    w.writerow([*head, n, t, "", e["samples"], "unavailable"])
                else:
                    w.writerow([*head, n, t, f"{e['score']:.4f}", e["samples"], "ok"])
            m = length_score(r, n)
            status = "missing" if m.mean is None else "partial" if m.partial else "ok"
            w.writerow([*head, n, "mean", "" if m.mean is None else f"{m.mean:.4f}", "", status])
    return buf.getvalue()


def plot_points(runs: list[dict]) -> list[tuple[str, list[tuple[int, float]], list[tuple[int, float]]]]:
    """Per run: (label, joined, hollow) points of (length, mean score). A length at which some task
    never ran (missing, e.g. an evaluation cut short) is hollow and left out of the line: its mean
    covers fewer tasks than the others. Unavailable tasks (no data offline) do not count as missing."""
    return [_split_points(row) for row in summary(runs)]


def _split_points(row: Row) -> tuple[str, list[tuple[int, float]], list[tuple[int, float]]]:
    joined = [(n, c.mean) for n, c in row.cells.items() if c.mean is not None and not c.missing]
    hollow = [(n, c.mean) for n, c in row.cells.items() if c.mean is not None and c.missing]
    return row.label, joined, hollow


LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")


def plot_styles(runs: list[dict]) -> list[dict]:
    """Line style per run. Runs laid out as <family>/<variant> (what `bench/study.py` writes:
    <out>/hybrid/yarn, <out>/transformer/yarn) from more than one family, each (family, variant)
    once: a color per variant and a line style and marker per family, so that hybrid yarn and
    transformer yarn share a color. Otherwise a color per run, solid lines."""
    from pathlib import PurePath

    keys = [(PurePath(r["model"].rstrip("/")).parent.name, PurePath(r["model"].rstrip("/")).name) for r in runs]
    families = list(dict.fromkeys(f for f, _ in keys))
    if 1 < len(families) <= len(LINESTYLES) and len(set(keys)) == len(keys):
        variants = list(dict.fromkeys(v for _, v in keys))
        return [{"color": f"C{variants.index(v) % 10}", "linestyle": LINESTYLES[families.index(f)],
                 "marker": MARKERS[families.index(f)]} for f, v in keys]
    return [{"color": f"C{i % 10}", "linestyle": "-", "marker": "o"} for i in range(len(runs))]


LEGEND_INSIDE_MAX = 6


def plot(runs: list[dict], path: str, title: str = "RULER") -> None:
    """Mean score vs context length (log2 axis), one line per run (hollow markers: lengths with
    tasks missing; styles: `plot_styles`); written with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lengths = all_lengths(runs)
    outside = len(runs) > LEGEND_INSIDE_MAX  # a long legend goes right of the axes, not over the lines
    fig = Figure(figsize=(9.5 if outside else 7, 4.5), dpi=120)
    FigureCanvasAgg(fig)  # headless: no pyplot, no display needed
    ax = fig.subplots()
    rows = summary(runs)
    points = [_split_points(row) for row in rows]
    for (label, joined, hollow), style in zip(points, plot_styles(runs)):
        if joined:
            ax.plot(*zip(*joined), label=label, **style)
        if hollow:
            ax.plot(*zip(*hollow), **{**style, "linestyle": "none"}, markerfacecolor="none",
                    label=None if joined else label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [format_length(n) for n in lengths])
    ax.minorticks_off()
    ax.set_ylim(-2, 102)
    ax.set_xlabel("context length (tokens)")
    partial = any(c.partial for row in rows for c in row.cells.values() if c.mean is not None)
    ax.set_ylabel("RULER score (mean of the tasks scored)" if partial else f"RULER score (mean of {len(RULER_TASKS)} tasks)")
    if any(hollow for _, _, hollow in points):
        ax.annotate("hollow: some tasks missing at that length", (0.99, 0.02), xycoords="axes fraction",
                    ha="right", fontsize="x-small")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    if runs:
        if outside:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0)
        else:
            ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
