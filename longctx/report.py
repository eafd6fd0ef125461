"""RULER results as tables (Markdown, CSV) and a score-vs-length plot.

Input is a list of validated results dicts (`longctx.results.load`). A length's score
is the mean of the 13 RULER tasks; when some task is missing or unavailable the mean is over
the tasks that did run and the cell is marked `*`, with a footnote saying what is left out.

Runs that share a label (a study's pretraining seeds: same label, different dirs) form one group,
labelled `<label> (n=3)`: a cell is the mean of the runs' cells with their range, `49.3 (47.6–51.0)`,
and the group's avg is the mean (min–max) of the runs' own averages. `group=False` gives every run
its own row, numbered where labels repeat. A run alone in its group is shown as without grouping.
"""

from __future__ import annotations

import csv
import io
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import fmean

from longctx.lengths import format_length
from longctx.results import RULER_TASKS, cell, rope_method, run_label, unfinished

_TASKS: list[str] = list(RULER_TASKS)  # the tasks a length's mean is over; `task_subset` narrows them
MISSING = "—"  # not run
UNAVAILABLE = "n/a"  # could not run here (e.g. QA data offline)
UNFINISHED = "cut"  # the evaluation stopped before it (`longctx eval --finished-only`)


@contextmanager
def task_subset(tasks: list[str] | None):
    """Inside it, every table, plot and CSV of this module is over `tasks` alone (in RULER's order):
    `longctx compare --tasks`. None: all 13."""
    global _TASKS
    saved = _TASKS
    _TASKS = [t for t in RULER_TASKS if t in tasks] if tasks else saved
    try:
        yield
    finally:
        _TASKS = saved


def tasks() -> list[str]:
    """The tasks the tables are over now (all 13, or `task_subset`'s)."""
    return list(_TASKS)


def subset_note() -> list[str]:
    """A line naming the tasks the means are over, when they are not all 13."""
    if _TASKS == list(RULER_TASKS):
        return []
    return ["", f"Means over {len(_TASKS)} tasks (--tasks): {', '.join(_TASKS)}."]


@dataclass
class LengthScore:
    mean: float | None  # None: no task scored at this length
    unavailable: list[str] = field(default_factory=list)  # a group's: over its runs that scored here
    missing: list[str] = field(default_factory=list)
    runs: list[LengthScore] = field(default_factory=list)  # a group's: one per run; empty for a run
    unfinished: list[str] = field(default_factory=list)  # of `unavailable`: cells an evaluation cut short left

    @property
    def scored(self) -> list[LengthScore]:
        return [c for c in self.runs if c.mean is not None]

    @property
    def spread(self) -> tuple[float, float] | None:
        """A group's (min, max) of its runs' means; None for a run, or a group with one run scored here."""
        means = [c.mean for c in self.scored]
        return (min(means), max(means)) if len(means) > 1 else None

    @property
    def partial(self) -> bool:  # a group: also when some run has no results at this length
        return bool(self.unavailable or self.missing) or len(self.scored) < len(self.runs)


@dataclass
class Row:
    label: str
    cells: dict[int, LengthScore]  # every length of the table
    average: float | None  # a group: the mean of its runs' averages
    average_partial: bool
    n: int = 1  # runs in the row
    average_spread: tuple[float, float] | None = None  # a group: (min, max) of its runs' averages


def length_score(results: dict, length: int) -> LengthScore:
    scores, unavailable, missing, cut = [], [], [], []
    for task in _TASKS:
        entry = cell(results, task, length)
        if entry is None:
            missing.append(task)
        elif "unavailable" in entry:
            unavailable.append(task)
            if unfinished(entry):
                cut.append(task)
        else:
            scores.append(entry["score"])
    return LengthScore(fmean(scores) if scores else None, unavailable, missing, unfinished=cut)


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


def groups(runs: list[dict], group: bool = True) -> list[tuple[str, list[dict]]]:
    """(row label, runs) in order of first appearance: runs sharing a label together, labelled
    `<label> (n=k)` when k > 1; with group=False one run each, labelled as `labels` does."""
    if not group:
        return [(name, [r]) for name, r in zip(labels(runs), runs, strict=True)]
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(run_label(r), []).append(r)
    return [(label if len(rs) == 1 else f"{label} (n={len(rs)})", rs) for label, rs in by.items()]


def _run_row(label: str, r: dict, lengths: list[int]) -> Row:
    cells = {n: length_score(r, n) for n in lengths}
    present = [c for c in cells.values() if c.mean is not None]
    avg = fmean(c.mean for c in present) if present else None
    return Row(label, cells, avg, len(present) < len(cells) or any(c.partial for c in present))


def _group_score(cells: list[LengthScore]) -> LengthScore:
    scored = [c for c in cells if c.mean is not None]
    return LengthScore(fmean(c.mean for c in scored) if scored else None,
                       [t for t in _TASKS if any(t in c.unavailable for c in scored)],
                       [t for t in _TASKS if any(t in c.missing for c in scored)], cells,
                       [t for t in _TASKS if any(t in c.unfinished for c in scored)])  # fmt: skip


def summary(runs: list[dict], group: bool = True) -> list[Row]:
    lengths = all_lengths(runs)
    rows = []
    for label, members in groups(runs, group):
        each = [_run_row(label, r, lengths) for r in members]
        if len(each) == 1:
            rows.append(each[0])
            continue
        avgs = [x.average for x in each if x.average is not None]
        rows.append(Row(label, {n: _group_score([x.cells[n] for x in each]) for n in lengths},
                        fmean(avgs) if avgs else None,
                        len(avgs) < len(each) or any(x.average_partial for x in each), len(each),
                        (min(avgs), max(avgs)) if len(avgs) > 1 else None))  # fmt: skip
    return rows


def _fmt(x: float | None, partial: bool = False, spread: tuple[float, float] | None = None) -> str:
    if x is None:
        return MISSING
    return f"{x:.1f}" + ("*" if partial else "") + (f" ({spread[0]:.1f}–{spread[1]:.1f})" if spread else "")


def _fmt_cell(c: LengthScore) -> str:
    return _fmt(c.mean, c.partial, c.spread)


GROUP_LEGEND = (
    "(n=…) rows, n runs: mean (min–max) over the runs sharing that label; "
    "their avg: mean (min–max) of the runs' own averages."
)


def _md(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(r) + " |" for r in body]


def _note(c: LengthScore) -> str | None:
    """Why a cell is marked `*` (None when it is not): no results, runs or tasks short."""
    if c.mean is None:
        return "no results"
    if not c.partial:
        return None
    parts = [f"{len(c.scored)}/{len(c.runs)} runs"] if len(c.scored) < len(c.runs) else []
    done = sorted({len(_TASKS) - len(x.missing) - len(x.unavailable) for x in c.scored or [c]})
    if done != [len(_TASKS)]:
        parts.append("–".join(map(str, (done[0], done[-1]) if len(done) > 1 else done)) + f"/{len(_TASKS)} tasks")
    offline = [t for t in c.unavailable if t not in c.unfinished]
    if offline:
        parts.append("unavailable: " + ", ".join(offline))
    if c.unfinished:
        parts.append("not finished: " + ", ".join(c.unfinished))
    if c.missing:
        parts.append("missing: " + ", ".join(c.missing))
    return "; ".join(parts)


def _footnotes(rows: list[Row]) -> list[str]:
    """One line per row and stretch of adjacent lengths with the same reason (`hybrid yarn 8k–64k: ...`)."""
    notes = []
    for row in rows:
        stretch: list[int] = []
        reason = None
        for n, c in [*row.cells.items(), (None, None)]:
            why = _note(c) if c is not None else None
            if stretch and why != reason:
                span = format_length(stretch[0]) + ("" if len(stretch) == 1 else "–" + format_length(stretch[-1]))
                notes.append(f"- {row.label} {span}: {reason}")
                stretch = []
            if why is not None:
                stretch.append(n)
                reason = why
    if not notes:
        return []
    return ["", f"\\* mean over the tasks and lengths that ran, not all {len(_TASKS)} tasks:", *notes]


def markdown_table(runs: list[dict], group: bool = True) -> str:
    """Rows: runs, or groups of runs sharing a label; columns: lengths + avg; cells: the 13-task mean
    (of the tasks of `task_subset`)."""
    rows = summary(runs, group)
    lengths = all_lengths(runs)
    header = ["model (method)", *(format_length(n) for n in lengths), "avg"]
    body = [
        [row.label, *(_fmt_cell(row.cells[n]) for n in lengths),
         _fmt(row.average, row.average_partial, row.average_spread)]
        for row in rows
    ]  # fmt: skip
    legend = ["", GROUP_LEGEND] if any(row.n > 1 for row in rows) else []
    return "\n".join(_md(header, body) + legend + _footnotes(rows) + subset_note()) + "\n"


def _task_cell(results: dict, task: str, length: int) -> str:
    entry = cell(results, task, length)
    if entry is None:
        return MISSING
    if "unavailable" in entry:
        return UNFINISHED if unfinished(entry) else UNAVAILABLE
    return f"{entry['score']:.1f}"


def _group_task_cell(members: list[dict], task: str, length: int) -> str:
    """A run's cell as `_task_cell`; a group's: mean (min–max) over the runs that scored the task,
    `*` when not all of them did."""
    if len(members) == 1:
        return _task_cell(members[0], task, length)
    entries = [cell(r, task, length) for r in members]
    scores = [e["score"] for e in entries if e is not None and "unavailable" not in e]
    if not scores:
        if all(unfinished(e) for e in entries if e is not None) and any(e is not None for e in entries):
            return UNFINISHED
        return UNAVAILABLE if any(e is not None for e in entries) else MISSING
    return _fmt(fmean(scores), len(scores) < len(members), (min(scores), max(scores)) if len(scores) > 1 else None)


def per_task_markdown(runs: list[dict], by: str = "length", group: bool = True) -> str:
    """Tasks as rows: one table per length (runs or groups as columns) or per run or group (lengths as columns)."""
    if by not in ("length", "run"):
        raise ValueError(f"by must be 'length' or 'run', not {by!r}")
    lengths, grouped, rows = all_lengths(runs), groups(runs, group), summary(runs, group)
    out = []
    if by == "length":
        for n in lengths:
            body = [[t, *(_group_task_cell(rs, t, n) for _, rs in grouped)] for t in _TASKS]
            body.append(["mean", *(_fmt_cell(row.cells[n]) for row in rows)])
            out += [f"### {format_length(n)}", "", *_md(["task", *(name for name, _ in grouped)], body), ""]
    else:
        for (name, rs), row in zip(grouped, rows, strict=True):
            body = [[t, *(_group_task_cell(rs, t, n) for n in lengths)] for t in _TASKS]
            body.append(["mean", *(_fmt_cell(row.cells[n]) for n in lengths)])
            out += [f"### {name}", "", *_md(["task", *map(format_length, lengths)], body), ""]
    cut = any(unfinished(cell(r, t, n)) for r in runs for t in _TASKS for n in lengths)  # the tables' cells
    out.append(f"{UNAVAILABLE}: could not run here (data unavailable); {MISSING}: not run."
               + (f" {UNFINISHED}: not finished (the evaluation was cut short)." if cut else ""))  # fmt: skip
    if any(row.n > 1 for row in rows):
        out.append("(n=…): n runs: mean (min–max) over the runs that scored the task; *: not all of them did.")
    return "\n".join(out) + "\n"


CSV_COLUMNS = ["run", "model", "method", "length", "task", "score", "samples", "status", "source"]


def csv_text(runs: list[dict], group: bool = True, sources: list[str] | None = None) -> str:
    """One row per (run, length, task) plus a `mean` row per (run, length); status
    ok|partial|unavailable|unfinished|missing.
    Always a row per run, grouped or not: `run` is the run's label (numbered where labels repeat with
    group=False), `source` its results file (`sources`, one per run; empty when not given)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    lengths = all_lengths(runs)
    names = [run_label(r) for r in runs] if group else labels(runs)
    for name, r, src in zip(names, runs, sources or [""] * len(runs), strict=True):
        head = [name, r["model"], rope_method(r["rope_parameters"])]
        for n in lengths:
            for t in _TASKS:
                e = cell(r, t, n)
                if e is None:
                    w.writerow([*head, n, t, "", "", "missing", src])
                elif "unavailable" in e:
                    w.writerow([*head, n, t, "", e["samples"], "unfinished" if unfinished(e) else "unavailable", src])
                else:
                    w.writerow([*head, n, t, f"{e['score']:.4f}", e["samples"], "ok", src])
            m = length_score(r, n)
            status = "missing" if m.mean is None else "partial" if m.partial else "ok"
            w.writerow([*head, n, "mean", "" if m.mean is None else f"{m.mean:.4f}", "", status, src])
    return buf.getvalue()


def plot_points(
    runs: list[dict],
    group: bool = True,
) -> list[tuple[str, list[tuple[int, float]], list[tuple[int, float]]]]:
    """Per run or group: (label, joined, hollow) points of (length, mean score). A length at which some
    task never ran (missing, or not finished: an evaluation cut short), or some run of a group has no results, is
    hollow and left out of the line: its mean covers fewer tasks or runs than the others. Unavailable
    tasks (no data offline) do not count as missing."""
    return [_split_points(row) for row in summary(runs, group)]


def _hollow(c: LengthScore) -> bool:
    return bool(c.missing or c.unfinished) or len(c.scored) < len(c.runs)


def _split_points(row: Row) -> tuple[str, list[tuple[int, float]], list[tuple[int, float]]]:
    joined = [(n, c.mean) for n, c in row.cells.items() if c.mean is not None and not _hollow(c)]
    hollow = [(n, c.mean) for n, c in row.cells.items() if c.mean is not None and _hollow(c)]
    return row.label, joined, hollow


def plot_bands(runs: list[dict], group: bool = True) -> list[tuple[str, list[tuple[int, float, float, float]]]]:
    """Per run or group: (label, [(length, mean, min, max)]) over the joined points of `plot_points`;
    a group's band spans its runs' means, a run's (or a length only one run of a group scored) is the mean."""
    out = []
    for row in summary(runs, group):
        _, joined, _ = _split_points(row)
        out.append((row.label, [(n, m, *(row.cells[n].spread or (m, m))) for n, m in joined]))
    return out


LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")


SEED_SUFFIX = re.compile(r"-s\d+$")  # longctx study's <model>-s<seed> with several pretraining seeds


def plot_styles(runs: list[dict]) -> list[dict]:
    """Line style per run (per group: pass its first run). Runs laid out as <family>/<variant> (what
    `longctx study` writes: <out>/hybrid/yarn, <out>/transformer/yarn, or <out>/hybrid-s1/yarn with
    several pretraining seeds: family hybrid) from more than one family, each (family, variant)
    once: a color per variant and a line style and marker per family, so that hybrid yarn and
    transformer yarn share a color. Otherwise a color per run, solid lines."""
    from pathlib import PurePath

    paths = [PurePath(r["model"].rstrip("/")) for r in runs]
    keys = [(SEED_SUFFIX.sub("", p.parent.name), p.name) for p in paths]
    families = list(dict.fromkeys(f for f, _ in keys))
    if 1 < len(families) <= len(LINESTYLES) and len(set(keys)) == len(keys):
        variants = list(dict.fromkeys(v for _, v in keys))
        return [
            {
                "color": f"C{variants.index(v) % 10}",
                "linestyle": LINESTYLES[families.index(f)],
                "marker": MARKERS[families.index(f)],
            }
            for f, v in keys
        ]
    return [{"color": f"C{i % 10}", "linestyle": "-", "marker": "o"} for i in range(len(runs))]


LEGEND_INSIDE_MAX = 6


def plot(runs: list[dict], path: str, title: str = "RULER", group: bool = True) -> None:
    """Mean score vs context length (log2 axis), one line per run or group (a group: its mean, with a
    shaded band from its runs' min to max; hollow markers: lengths with tasks or runs missing;
    styles: `plot_styles`); written with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lengths = all_lengths(runs)
    rows = summary(runs, group)
    outside = len(rows) > LEGEND_INSIDE_MAX  # a long legend goes right of the axes, not over the lines
    fig = Figure(figsize=(9.5 if outside else 7, 4.5), dpi=120)
    FigureCanvasAgg(fig)  # headless: no pyplot, no display needed
    ax = fig.subplots()
    points = [_split_points(row) for row in rows]
    styles = plot_styles([rs[0] for _, rs in groups(runs, group)])
    for (label, joined, hollow), style, row, (_, band) in zip(
        points, styles, rows, plot_bands(runs, group), strict=True
    ):
        if row.n > 1 and band:
            ns, _, lo, hi = zip(*band, strict=True)
            ax.fill_between(ns, lo, hi, color=style["color"], alpha=0.2, linewidth=0)
            if len(band) == 1:  # a band needs two lengths: show the lone range as a bar
                ax.vlines(ns, lo, hi, color=style["color"], alpha=0.4, linewidth=4)
        if joined:
            ax.plot(*zip(*joined, strict=True), label=label, **style)
        if hollow:
            ax.plot(
                *zip(*hollow, strict=True),
                **{**style, "linestyle": "none"},
                markerfacecolor="none",
                label=None if joined else label,
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [format_length(n) for n in lengths])
    ax.minorticks_off()
    ax.set_ylim(-2, 102)
    ax.set_xlabel("context length (tokens)")
    partial = any(c.partial for row in rows for c in row.cells.values() if c.mean is not None)
    ax.set_ylabel("RULER score (mean of the tasks scored)" if partial else f"RULER score (mean of {len(_TASKS)} tasks)")
    if any(hollow for _, _, hollow in points):
        what = "tasks or runs" if any(row.n > 1 for row in rows) else "tasks"
        ax.annotate(
            f"hollow: some {what} missing at that length",
            (0.99, 0.02),
            xycoords="axes fraction",
            ha="right",
            fontsize="x-small",
        )
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    if runs:
        if outside:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0)
        else:
            ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
