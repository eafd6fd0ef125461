"""Two methods on the same base models, run by run: `longctx compare --paired`.

A study extends each pretraining seed's base with every method, so two methods' runs come in pairs
that share a base, and the seed-to-seed spread of the bases cancels in their difference. For every two
rows of one model at one budget that differ in method (labels `<model> <method>[ (N steps)]`), and
every length: the difference of the two runs' means per base, their mean (min…max), and a mark: `>`
where the first row is above the second for every base, `<` below for every base, `≈` where the
bases disagree (or a difference is 0), blank with fewer than two bases, `≠` where no pair averages
the same tasks.

A run's base: `train.source_model` of its results (what `longctx extend` started from), else the
`base` folder beside the run (a study's layout, `<unit>/<method>` next to `<unit>/base`); the last two
parts of that path name it, so a study directory that moved still pairs.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from statistics import fmean

from longctx.lengths import format_length
from longctx.report import all_lengths, groups, length_score

LEGEND = (
    "first row minus second, per base model (runs extended from the same base): mean (min…max) over the bases "
    "both rows ran; `>`: the first row above the second for every base; `<`: below for every base; `≈`: not "
    "one sign for every base; blank: fewer than two bases; `≠`: no pair averages the same tasks (--tasks)."
)


def base_key(run: dict) -> str:
    src = (run.get("train") or {}).get("source_model")
    path = PurePosixPath(src) if isinstance(src, str) and src else PurePosixPath(run["model"]).parent / "base"
    return "/".join(path.parts[-2:])


def _parts(label: str) -> tuple[str, str, str]:
    """(model, method, the rest) of a row label `<model> <method>[ (N steps)]`, without ` (n=k)`."""
    model, _, rest = label.partition(" ")
    method, _, budget = rest.partition(" ")
    return model, method, budget


def pairs(grouped: list[tuple[str, list[dict]]]) -> list[tuple[str, list[dict], str, list[dict]]]:
    """Rows of one model and one budget that differ in method, in table order."""
    out = []
    for i, (la, ra) in enumerate(grouped):
        for lb, rb in grouped[i + 1 :]:
            (ma, xa, ba), (mb, xb, bb) = _parts(la), _parts(lb)
            if ma == mb and ba == bb and xa != xb:
                out.append((la, ra, lb, rb))
    return out


def cell(a: list[dict], b: list[dict], length: int) -> str:
    by_base = {base_key(r): length_score(r, length) for r in b}
    diffs, other_tasks = [], False
    for r in a:
        x, y = length_score(r, length), by_base.get(base_key(r))
        if y is None or x.mean is None or y.mean is None:
            continue
        if set(x.missing + x.unavailable) != set(y.missing + y.unavailable):
            other_tasks = True
            continue
        diffs.append(x.mean - y.mean)
    if not diffs:
        return "≠" if other_tasks else "-"
    mark = ""
    if len(diffs) > 1:
        mark = " >" if min(diffs) > 0 else " <" if max(diffs) < 0 else " ≈"
    spread = f" ({min(diffs):+.1f}…{max(diffs):+.1f})" if len(diffs) > 1 else ""
    return f"{fmean(diffs):+.1f}{spread}{mark}"


def paired_markdown(runs: list[dict]) -> str:
    grouped = [(label.split(" (n=")[0], rs) for label, rs in groups(runs)]
    found = pairs(grouped)
    if not found:
        return "No two rows of one model differ only in method: nothing to pair.\n"
    lengths = all_lengths(runs)
    head = "| row | minus row | " + " | ".join(map(format_length, lengths)) + " |"
    lines = [head, "|:---|:---|" + "---:|" * len(lengths)]
    for la, ra, lb, rb in found:
        lines.append(f"| {la} | {lb} | " + " | ".join(cell(ra, rb, n) for n in lengths) + " |")
    return "\n".join(["### Paired by base model", "", *lines, "", LEGEND]) + "\n"
