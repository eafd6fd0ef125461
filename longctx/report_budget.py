"""RULER against the training budget: `longctx compare --budget` (tables) and `--budget-plot FILE`.

Each results file must record its model's training tokens (`train.tokens`, written by `longctx eval`
from the model's longctx_train.json); results of pretrained bases (`train.kind: pretrain`) are left out:
the budget is the extension's. A row is a run's label with a budget suffix ` (N steps)` taken
off (the names `longctx study` gives extend.budgets runs), so `hybrid yarn` and `hybrid yarn (180
steps)` are one row at two budgets; runs sharing a row and a budget (pretraining seeds) give a cell's
mean and its (min–max). One table per length: rows, then a column per budget in tokens. A cell is a
run's mean over the tasks it scored, as in the main table; `*` (a hollow point in the plot, off the line)
where some run's evaluation was cut short or left tasks out, so the mean covers fewer tasks than the others.
"""

from __future__ import annotations

import re
from statistics import fmean

from longctx.errors import UsageError
from longctx.lengths import format_length
from longctx.report import all_lengths, length_score
from longctx.results import run_label

BUDGET_SUFFIX = re.compile(r" \(\d+ steps\)$")


def format_tokens(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def budget_cells(runs: list[dict], files: list[str]) -> tuple[list[str], list[int], dict, set]:
    """(row names, token budgets, {(name, tokens, length): [run means]}, {the keys where some run's mean
    leaves out tasks that did not run or finish}) over every run and length."""
    names, budgets, cells, short = [], set(), {}, set()
    for r, f in zip(runs, files, strict=True):
        if (r.get("train") or {}).get("kind") == "pretrain":
            continue
        tokens = (r.get("train") or {}).get("tokens")
        if tokens is None:
            raise UsageError(
                f"{f}: no training budget recorded (train.tokens); --budget needs results of `longctx eval` on "
                "a model longctx trained"
            )
        name = BUDGET_SUFFIX.sub("", run_label(r))
        names += [name] if name not in names else []
        budgets.add(tokens)
        for n in all_lengths([r]):
            c = length_score(r, n)
            if c.mean is not None:
                cells.setdefault((name, tokens, n), []).append(c.mean)
                if c.missing or c.unfinished:
                    short.add((name, tokens, n))
    return names, sorted(budgets), cells, short


def _cell(values: list[float] | None, short: bool = False) -> str:
    if not values:
        return "—"
    mean = f"{fmean(values):.1f}" + ("*" if short else "")
    return mean if len(values) == 1 else f"{mean} ({min(values):.1f}–{max(values):.1f})"


def budget_markdown(runs: list[dict], budget: tuple[list[str], list[int], dict, set]) -> str:
    """The tables of `budget_cells(runs, files)`: one per length, a row per name, a column per budget."""
    names, budgets, cells, short = budget
    out = ["### RULER by extension budget (training tokens)", ""]
    for n in all_lengths(runs):
        if not any(k[2] == n for k in cells):
            continue
        out += [f"#### {format_length(n)}", ""]
        out.append("| row | " + " | ".join(format_tokens(b) for b in budgets) + " |")
        out.append("|:---|" + "---:|" * len(budgets))
        out += [
            "| " + " | ".join([name, *(_cell(cells.get((name, b, n)), (name, b, n) in short) for b in budgets)]) + " |"
            for name in names
        ]
        out.append("")
    out.append("Cells: the mean over the runs at that budget (their min–max where there are several); —: not run.")
    if short:
        out.append("\\*: some run's evaluation was cut short or left tasks out (main table's footnotes): fewer tasks.")
    return "\n".join(out) + "\n"


def budget_plot(
    runs: list[dict], budget: tuple[list[str], list[int], dict, set], path: str, title: str = "RULER"
) -> None:
    """One panel per length of `budget_cells(runs, files)`: mean score vs extension tokens (log axis), a line
    per row with its runs' band; a hollow point off the line where the mean covers fewer tasks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, budgets, cells, short = budget
    lengths = [n for n in all_lengths(runs) if any(k[2] == n for k in cells)]
    fig = Figure(figsize=(3.2 * len(lengths) + 2.2, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(lengths), sharey=True, squeeze=False)[0]
    for ax, n in zip(axes, lengths, strict=True):
        for i, name in enumerate(names):
            pts = [(b, cells[(name, b, n)]) for b in budgets if (name, b, n) in cells and (name, b, n) not in short]
            off = [(b, cells[(name, b, n)]) for b in budgets if (name, b, n) in short]
            color = f"C{i % 10}"
            if pts:
                xs = [b for b, _ in pts]
                ax.plot(xs, [fmean(v) for _, v in pts], marker="o", color=color, label=name)
                ax.fill_between(xs, [min(v) for _, v in pts], [max(v) for _, v in pts], color=color, alpha=0.15)
            if off:
                ax.plot([b for b, _ in off], [fmean(v) for _, v in off], "o", mfc="none", color=color,
                        label=None if pts else name)  # fmt: skip
        ax.set_xscale("log")
        ax.set_title(format_length(n))
        ax.set_xlabel("extension tokens")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("RULER score (mean of the tasks scored)")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
