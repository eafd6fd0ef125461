"""What `longctx eval` and `longctx lm-eval` set up in lm-eval once per process: quiet git, a log handler on
the current stderr, the environment report collected once."""

from __future__ import annotations

import sys
from pathlib import Path


def quiet_git_hash() -> None:
    """lm-eval stamps results with `git describe` of the working directory and lets git print "fatal:
    not a git repository" outside a checkout, once per cell; ask git the same with its stderr silenced."""
    import subprocess

    import lm_eval.evaluator
    from lm_eval.loggers.utils import get_commit_from_path

    def git_hash():
        try:
            return subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL).strip().decode()
        except (subprocess.CalledProcessError, OSError):
            return get_commit_from_path(Path.cwd())

    lm_eval.evaluator.get_git_commit_hash = git_hash


def log_to_current_stderr() -> None:
    """lm-eval sets its log handler up once per process, on the sys.stderr of that moment; a later evaluation
    in the same process (a notebook, tests, several commands run in-process) may have another stderr and the
    first one closed ("--- Logging error ---"): point lm-eval's stream handlers at the stderr of now."""
    import logging

    for handler in logging.getLogger("lm_eval").handlers:
        if type(handler) is logging.StreamHandler and handler.stream is not sys.stderr:
            with handler.lock:  # not setStream: it flushes the old stream first, which may be closed
                handler.stream = sys.stderr


def env_info_once() -> None:
    """lm-eval stamps every simple_evaluate result with torch's collect_env report, which runs `pip list`,
    nvidia-smi and more in subprocesses: 0.6 s per call on a CPU machine, most of a short cell's time and
    once per cell here. The environment does not change within a process: collect it once, copy it after."""
    import lm_eval.evaluator
    from lm_eval.loggers import utils

    if getattr(lm_eval.evaluator.add_env_info, "once", False):
        return
    info: dict = {}

    def add_env_info(storage: dict) -> None:
        if not info:
            utils.add_env_info(info)
        storage.update(info)

    add_env_info.once = True
    lm_eval.evaluator.add_env_info = add_env_info
