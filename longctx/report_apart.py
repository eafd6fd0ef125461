"""Which differences between grouped rows exceed the spread of their runs: `longctx compare --apart`.

For every pair of rows with several runs each (a study's pretraining seeds) that share their model
or their method (labels `<model> <method ...>`), and every length, one mark: `>` where the first
row's lowest run is above the second row's highest (the two ranges are apart: every run of one
beats every run of the other), `<` the reverse, `≈` where the ranges overlap, `≠` where the runs'
means are over different tasks (an evaluation cut short, a task unavailable to some run: compare those
with --tasks over the tasks they share), and nothing where either row has fewer than two runs scored
there. Apart ranges over a few seeds are a conservative reading, not a significance test: with two runs
each they say only that both seeds agree.
"""

from __future__ import annotations

import re

from longctx.lengths import format_length
from longctx.report import Row, summary

LEGEND = (
    "`>`: every run of the first row above every run of the second (ranges apart); `<`: the reverse; "
    "`≈`: the ranges overlap; `≠`: the runs' means are over different tasks (--tasks picks shared ones); "
    "blank: fewer than two runs scored."
)


def _split(label: str) -> tuple[str, str]:
    name = re.sub(r" \(n=\d+\)$", "", label)
    model, _, method = name.partition(" ")
    return model, method


def mark(a, b) -> str:
    """'>' / '<' / '≈' for two groups' LengthScores at one length, '≠' when their runs scored different
    tasks there, '' when either lacks a range."""
    ra, rb = a.spread, b.spread
    if ra is None or rb is None:
        return ""
    if len({frozenset(c.missing + c.unavailable) for c in a.scored + b.scored}) > 1:
        return "≠"
    if ra[0] > rb[1]:
        return ">"
    if rb[0] > ra[1]:
        return "<"
    return "≈"


def pairs(rows: list[Row]) -> list[tuple[Row, Row]]:
    """Pairs of rows with n >= 2 sharing their model or their method, in table order."""
    many = [r for r in rows if r.n > 1]
    out = []
    for i, a in enumerate(many):
        for b in many[i + 1 :]:
            (ma, xa), (mb, xb) = _split(a.label), _split(b.label)
            if (ma == mb) != (xa == xb):  # same model, other method; or same method, other model
                out.append((a, b))
    return out


def apart_markdown(runs: list[dict]) -> str:
    rows = summary(runs)
    found = pairs(rows)
    if not found:
        return "No two rows with several runs share a model or a method: nothing to set apart.\n"
    lengths = list(rows[0].cells)
    head = ["row", "vs row", *(format_length(n) for n in lengths)]
    lines = ["| " + " | ".join(head) + " |", "|:---|:---|" + ":---:|" * len(lengths)]
    for a, b in found:
        lines.append("| " + " | ".join([a.label, b.label, *(mark(a.cells[n], b.cells[n]) for n in lengths)]) + " |")
    return "\n".join(["### Ranges apart", "", *lines, "", LEGEND]) + "\n"
