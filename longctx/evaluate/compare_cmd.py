"""`longctx compare FILE.json ...`: the RULER table across runs (Markdown on stdout), optional CSV and plot.

Rows are runs, labelled `<model dir> (<method>)` with the method read from the stored
rope_parameters (null -> drope, yarn, linear -> pi, dynamic -> ntk, default) unless the file
carries a label; columns are context lengths and their average; a cell is the mean of the
13 RULER tasks, marked `*` when some were missing or unavailable (see the footnote).
Runs sharing a label (e.g. a study's pretraining seeds) form one row `<label> (n=3)`: each cell
is the mean over the runs with their range, `49.3 (47.6–51.0)`, the avg the mean (min–max) of
the runs' own averages; the plot draws the mean with a band. --no-group: a row per run.
--apart adds, for rows of several runs that share a model or a method, a mark per length: `>` / `<`
where one row's runs all lie above the other's (ranges apart), `≈` where the ranges overlap.
--paired adds, for rows of one model (and budget) that differ in method, their difference per base model
(runs extended from the same base, e.g. a study's pretraining seed): mean (min…max), `>` / `<` where the
sign is the same for every base.
--tasks niah_single_1,niah_multikey_1,...: every table, plot and CSV over those tasks alone (the
'ruler_' prefix may be left out), e.g. the tasks every run finished, or the needle tasks.
--budget / --budget-plot: each row against its training budget (the tokens `longctx eval` recorded from
the model's longctx_train.json; a study's `<label> (N steps)` runs join the `<label>` row).
--time: how long each evaluation took per length (the cells `longctx eval` timed) and its samples per second:
the same samples through `--backend longctx` and `--backend vllm`, side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from longctx import report, results
from longctx.errors import UsageError
from longctx.paths import check_output


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("\n", 1)[1]
    p.add_argument("files", nargs="+", metavar="FILE.json", help="results written by `longctx eval`")
    p.add_argument("--per-task", action="store_true", help="also print per-task tables (tasks as rows)")
    p.add_argument("--per-task-by", choices=["length", "run"], default="length",
                   help="per-task tables: one per length with runs as columns (default), or one per run")  # fmt: skip
    p.add_argument("--csv", metavar="FILE", help="write every (run, length, task) score and the means as CSV")
    p.add_argument("--plot", metavar="FILE.png", help="write score vs context length (log2 axis)")
    p.add_argument("--title", default="RULER", help="plot title (default: RULER)")
    p.add_argument(
        "--apart",
        action="store_true",
        help="also mark, per length, which rows' run ranges are apart (rows sharing a model or a method)",
    )
    p.add_argument(
        "--paired",
        action="store_true",
        help="also, per length, each two methods' difference on the same base models (a study's seeds)",
    )
    p.add_argument(
        "--budget",
        action="store_true",
        help="also a table per length: rows against their training budget (train.tokens; ' (N steps)' rows joined)",
    )
    p.add_argument("--budget-plot", metavar="FILE.png", help="write score vs extension tokens, a panel per length")
    p.add_argument("--time", action="store_true", help="also a table of each run's seconds and samples/s per length")
    p.add_argument("--tasks", help="comma-separated tasks: the means over these alone (default: all 13)")
    p.add_argument(
        "--no-group",
        action="store_true",
        help="a row (and line) per run, numbered where labels repeat, instead of one per label",
    )


def run(args: argparse.Namespace) -> int:
    for flag, path in (("--csv", args.csv), ("--plot", args.plot), ("--budget-plot", args.budget_plot)):
        if path is not None:  # plot's savefig makes no folder: the folder must be there
            check_output(path, flag, kind="file", folder_exists=True)
    for flag, path in (("--plot", args.plot), ("--budget-plot", args.budget_plot)):
        if path is not None and Path(path).suffix.lower() not in (".png", ".svg", ".pdf"):
            raise UsageError(f"{flag} {path!r}: use a .png, .svg or .pdf file name")
    for flag in ("apart", "paired"):
        if getattr(args, flag) and args.no_group:
            raise UsageError(f"--{flag} compares rows of several runs: leave out --no-group")
    tasks = None if args.tasks is None else results.parse_tasks(args.tasks)
    runs = [results.load(f) for f in args.files]  # all validated before anything is written
    with report.task_subset(tasks):
        return _report(args, runs)


def _report(args: argparse.Namespace, runs: list[dict]) -> int:
    if args.budget or args.budget_plot:
        from longctx.report_budget import budget_cells, budget_markdown, budget_plot

        budget = budget_cells(runs, args.files)  # every file has its budget, before anything is printed

    group = not args.no_group
    print(report.markdown_table(runs, group=group), end="")
    if args.apart:
        from longctx.report_apart import apart_markdown

        print()
        print(apart_markdown(runs), end="")
    if args.paired:
        from longctx.report_paired import paired_markdown

        print()
        print(paired_markdown(runs), end="")
    if args.budget:
        print()
        print(budget_markdown(runs, budget), end="")
    if args.time:
        from longctx.report_time import time_markdown

        print()
        print(time_markdown(runs), end="")
    if args.per_task:
        print()
        print(report.per_task_markdown(runs, by=args.per_task_by, group=group), end="")
    if args.csv:
        results.write_atomic(args.csv, report.csv_text(runs, group=group, sources=args.files))
    if args.plot:
        report.plot(runs, args.plot, title=args.title, group=group)
    if args.budget_plot:
        budget_plot(runs, budget, args.budget_plot, title=args.title)
    return 0
