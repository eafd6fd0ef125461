"""`longctx lm-eval ARGS...`: the `lm_eval` CLI with this suite's RULER tasks and `--model longctx`.

Every argument goes to lm-eval unchanged, `--help` included; the only additions are
`--include_path <eval_tasks>` (merged with one you give) and the `longctx` model registration:

    longctx lm-eval --model longctx --model_args pretrained=runs/drope-64k --tasks ruler \\
        --metadata '{"max_seq_lengths":[4096,65536]}'
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from longctx.errors import UsageError
from longctx.results import RULER_TASKS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments for lm_eval (see `lm_eval --help`)")
    # A pass-through must not interpret `--model`, `--help`, ... itself: with no prefix
    # character left, argparse treats every word as part of the remainder.
    p.prefix_chars = "\0"


def check_pretrained(model_args) -> None:
    """`pretrained=` names a local folder, or a Hub id (owner/name) when online: a path that is
    neither is refused here rather than in a traceback after lm-eval has started."""
    spec = model_args.get("pretrained") if isinstance(model_args, dict) else None
    if not isinstance(spec, str) or not spec:
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        return
    hub_like = re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not path.parent.is_dir()
    offline = any(
        os.environ.get(v, "") not in ("", "0", "false", "False") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    if path.exists() or not hub_like or offline:
        raise UsageError(
            f"--model_args pretrained={spec}: not a model folder"
            + ("" if path.exists() or not hub_like else " (and offline, so not a Hub id)")
        )


def run_checked(cli, ns) -> None:
    """lm-eval's run, with its unknown-task error turned into ours (before any model is loaded)."""
    if getattr(ns, "command", None) == "run":
        check_pretrained(getattr(ns, "model_args", None))
    try:
        cli.execute(ns)
    except ValueError as e:
        if str(e).startswith("Tasks not found"):  # lm-eval's process_tasks, before the model is built
            raise UsageError(
                f"--tasks: {e} (ours: ruler, {', '.join(RULER_TASKS)}; all: `longctx lm-eval ls tasks`)"
            ) from None
        raise


def run(args: argparse.Namespace) -> int:
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    import longctx.evaluate.lm_model  # noqa: F401  registers --model longctx
    from eval_tasks import TASKS_DIR
    from longctx.evaluate.lm_eval_setup import log_to_current_stderr, quiet_git_hash

    argv = list(args.lm_eval_args)
    old_argv = sys.argv
    sys.argv = ["longctx lm-eval", *argv]
    try:
        setup_logging()
        log_to_current_stderr()
        quiet_git_hash()
        cli = HarnessCLI()
        ns = cli.parse_args()
        if hasattr(ns, "include_path"):
            # TaskManager takes a list; ours first so that a path the user gives can override it.
            ns.include_path = [str(TASKS_DIR)] + ([ns.include_path] if ns.include_path else [])
        run_checked(cli, ns)
    except SystemExit as e:  # lm-eval exits on --help and on its own usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old_argv
        from longctx.evaluate.vllm_engine import stop_all

        stop_all()  # --model vllm: its engine process, which would keep this one from exiting
    return 0
