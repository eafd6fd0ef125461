"""How long each evaluation took: `longctx compare --time`.

A row per results file (its label and backend), a column per length and one for all lengths: the seconds of
the cells `longctx eval` timed (a cell answered in one run records its wall time) and the samples per second
over them. `*` where some scored cell has no time (answered partly from a journal, or written before times
were recorded), so the figure covers fewer cells than the row scored. The same samples through two backends
(`--backend longctx` and `--backend vllm`) side by side is a speed comparison on RULER's own prompts.
"""

from __future__ import annotations

from longctx import report
from longctx.lengths import format_length


def _cells(run: dict, lengths: list[int]) -> tuple[float, int, bool]:
    """(seconds, samples, every scored cell timed) over the cells of `lengths`."""
    seconds, samples, whole = 0.0, 0, True
    for task in report.tasks():
        for n in lengths:
            entry = run["scores"].get(task, {}).get(str(n))
            if entry is None or entry.get("score") is None:
                continue
            if "seconds" in entry:
                seconds += entry["seconds"]
                samples += entry["samples"]
            else:
                whole = False
    return seconds, samples, whole


def _fmt(seconds: float, samples: int, whole: bool) -> str:
    if not samples:
        return report.MISSING
    rate = f"{samples / seconds:.2f}/s" if seconds > 0 else "-"
    return f"{seconds:.1f} s ({rate}){'' if whole else '*'}"


def time_markdown(runs: list[dict]) -> str:
    lengths = report.all_lengths(runs)
    head = ["run", "backend", *[format_length(n) for n in lengths], "all"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, run in zip(report.labels(runs), runs, strict=True):
        cols = [_fmt(*_cells(run, [n])) for n in lengths] + [_fmt(*_cells(run, lengths))]
        lines.append("| " + " | ".join([label, run["backend"], *cols]) + " |")
    notes = ["", "Seconds of the timed cells (samples per second over them); * some scored cells carry no time."]
    return "\n".join(lines + notes + report.subset_note()) + "\n"
