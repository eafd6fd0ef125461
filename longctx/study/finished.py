"""`longctx study STUDY.yaml --finished-only`: the results of every evaluation stage that was cut short,
read from its answer journal without the model (`longctx eval --finished-only` per stage).

For a study directory brought back from a machine that is gone (the weights with it): each chosen
evaluation stage (eval-base, gate, eval) that is not done and has a journal beside its results gets
the results of the cells its journal finished; the other cells are recorded "not finished", so
`longctx compare` can read every run and the study state still counts the stage as not done (a rerun
on a GPU resumes it). Training and compare stages are left alone; no GPU is needed.
"""

from __future__ import annotations

import shlex
import subprocess

from longctx.study.stage import Stage
from longctx.study.state import status

EVAL_KINDS = ("eval-base", "gate", "eval")


def score_journals(stages: list[Stage], dry_run: bool = False) -> int:
    """Run `<stage cmd> --finished-only` for each cut evaluation; 0, or 2 when one of them failed."""
    from longctx.evaluate.runner import journal_path  # lm-eval comes with it: only when asked for

    failed, scored = [], 0
    for s in stages:
        if s.kind not in EVAL_KINDS:
            continue
        if status(s) == "done":
            print(f"study: {s.name}: done, skipped")
            continue
        journal = journal_path(s.out)
        if not journal.is_file():
            print(f"study: {s.name}: no journal ({journal}), skipped")
            continue
        cmd = [*s.cmd, "--finished-only"]
        if dry_run:
            print(shlex.join(cmd))
            continue
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            failed.append(s.name)
            err = run.stderr.strip().splitlines()
            print(f"study: {s.name}: failed (exit {run.returncode}): {err[-1] if err else ''}")
            continue
        scored += 1
        wrote = [line for line in run.stdout.splitlines() if line.startswith("wrote ")]
        print(f"study: {s.name}: {wrote[-1] if wrote else 'scored'}")
    if not dry_run:
        print(
            f"study: {scored} evaluation(s) scored from their journals"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
    return 2 if failed else 0
