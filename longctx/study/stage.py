"""What a study is made of: stages (one `python -m longctx ...` command each) and the two ways a run stops."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from longctx.errors import UsageError

KINDS = ("pretrain", "eval-base", "gate", "extend", "eval", "compare")


class StudyError(UsageError):
    """A bad study file or flag, or a stage that failed: one line, exit code 2."""


class OutOfTime(Exception):
    """The --time-budget ran out; the stage in flight was stopped where it resumes from."""


@dataclasses.dataclass
class Stage:
    name: str
    kind: str
    cmd: list[str]
    out: Path  # run dir (training) or results JSON (eval) or results.md (compare)
    arch: str | None = None  # the run unit: the model's label, with -s<seed> when the study has several seeds
    model: str | None = None  # the study's model label (hybrid, transformer): what the gate names
    inputs: list[Path] = dataclasses.field(default_factory=list)  # compare: the results it reads
    needs: list[str] = dataclasses.field(default_factory=list)  # stages that must finish first
    preamble: object = None  # compare: () -> markdown put above the tables (the gate's outcome)
