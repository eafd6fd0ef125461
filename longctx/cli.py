"""`longctx <command>`: a thin dispatcher.

Each command lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only for the command that runs, so `longctx --help` stays instant and a
broken optional dependency of one command cannot break the others.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from longctx import env
from longctx.errors import UsageError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("longctx.train.pretrain_cmd", "train a model from scratch at a base context length"),
    "extend": ("longctx.train.extend_cmd", "extend a model's context with a RoPE method (yarn, drope, pi, ntk, none)"),
    "eval": ("longctx.evaluate.eval_cmd", "run RULER through lm-evaluation-harness and write a results JSON"),
    "compare": ("longctx.evaluate.compare_cmd", "compare RULER results JSON files: tables and plots"),
    "lm-eval": ("longctx.evaluate.lm_eval_cmd", "lm_eval with the longctx model and RULER tasks registered"),
    "study": ("longctx.study.study_cmd", "run a hybrid-vs-transformer study stage by stage from a study YAML"),
    "answers": (
        "longctx.evaluate.answers_cmd",
        "a RULER evaluation's answers beside the references, per task and length",
    ),
    "summary": (
        "longctx.train.summary_cmd",
        "summarise training runs from their metrics.jsonl: one row per (run, stage)",
    ),
    "export": ("longctx.train.export_cmd", "export a training checkpoint to an HF model directory"),
    "temperature": (
        "longctx.train.temperature_cmd",
        "DRoPE's softmax temperature (fixed or fitted) folded into a copy of a DRoPE run's model",
    ),
    "doctor": ("longctx.doctor_cmd", "what this machine will run: versions, GPU, kernel packages, kernel paths"),
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longctx",
        description="Long-context extension and RULER evaluation for hybrid language models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {n:<10} {h}" for n, (_, h) in COMMANDS.items())
        + "\n\n`longctx COMMAND --help` shows a command's options.",
    )
    p.add_argument("command", metavar="COMMAND", help=" | ".join(COMMANDS))
    return p


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; users asked for one line naming the bad value."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # "-1e-3" is a (bad) value, not a flag: argparse's own pattern knows only -1 and -.5, so
        # `--lr -1e-3` said "expected one argument" instead of naming the value
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _fail(prog: str, msg: str, code: int = 2) -> int:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _top_parser().print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        from longctx import __version__

        print(f"longctx {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return _fail("longctx", f"unknown command {name!r}; choose from: {', '.join(COMMANDS)}")
    module_name, help_text = COMMANDS[name]
    try:  # LONGCTX_* switches: a bad value stops here, before anything is written; the kernel cache
        env.check()  # directories are set before the command's imports (torch, triton, tilelang) read them
    except UsageError as e:
        return _fail(f"longctx {name}", str(e))
    module = importlib.import_module(module_name)
    parser = _OneLineParser(prog=f"longctx {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)  # argparse itself exits 2 with one line on a bad flag
    try:
        return int(module.run(args) or 0)
    except UsageError as e:
        return _fail(f"longctx {name}", str(e))
    except OSError as e:  # the filesystem refused mid-run (permissions changed, disk full): one line, not a traceback
        return _fail(f"longctx {name}", str(e), code=1)
    except KeyboardInterrupt:
        print(f"longctx {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
