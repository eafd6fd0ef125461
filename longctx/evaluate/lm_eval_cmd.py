"""`longctx lm-eval ARGS...`: the `lm_eval` CLI with this suite's RULER tasks and `--model longctx`.

Every argument goes to lm-eval unchanged, `--help` included; the only additions are
`--include_path <eval_tasks>` (merged with one you give) and the `longctx` model registration:

    longctx lm-eval --model longctx --model_args pretrained=runs/drope-64k --tasks ruler \\
        --metadata '{"max_seq_lengths":[4096,65536]}'
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments for lm_eval (see `lm_eval --help`)")
    # A pass-through must not interpret `--model`, `--help`, ... itself: with no prefix
    # character left, argparse treats every word as part of the remainder.
    p.prefix_chars = "\0"


def run(args: argparse.Namespace) -> int:
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    import longctx.evaluate.lm_model  # noqa: F401  registers --model longctx
    from eval_tasks import TASKS_DIR

    argv = list(args.lm_eval_args)
    old_argv = sys.argv
    sys.argv = ["longctx lm-eval", *argv]
    try:
        setup_logging()
        cli = HarnessCLI()
        ns = cli.parse_args()
        if hasattr(ns, "include_path"):
            # TaskManager takes a list; ours first so that a path the user gives can override it.
            ns.include_path = [str(TASKS_DIR)] + ([ns.include_path] if ns.include_path else [])
        cli.execute(ns)
    except SystemExit as e:  # lm-eval exits on --help and on its own usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old_argv
    return 0
