"""RULER scoring, as NVIDIA/RULER's scripts/eval: predictions are stripped and their control
characters turned into newlines (evaluate.py postprocess_pred); string_match_all (niah, vt, cwe,
fwe) is the fraction of references contained in the prediction, string_match_part (qa) is 1 if
any reference is; case-insensitive; 0-100, rounded to 2 decimals like NVIDIA's constants.py."""

from __future__ import annotations

import re

from .spec import TASK_SPECS

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
    return _CONTROL.sub("\n", prediction.strip()).strip()


def _contained(ref: str, pred: str) -> float:
    return 1.0 if ref.lower() in pred.lower() else 0.0


def match_all(prediction: str, references: list[str]) -> float:
    """One sample's string_match_all, 0..1."""
    return sum(_contained(r, prediction) for r in references) / len(references)


def match_part(prediction: str, references: list[str]) -> float:
    """One sample's string_match_part, 0..1."""
    return max(_contained(r, prediction) for r in references)


def metric(task: str):
    return match_part if TASK_SPECS[task]["kind"] == "qa" else match_all


def sample_score(task: str, prediction: str, references: list[str]) -> float:
    """One sample's score, 0..100, after NVIDIA's post-processing."""
    return 100.0 * metric(task)(postprocess(prediction), list(references))


def score(task: str, predictions: list[str], references: list[list[str]]) -> float:
    """NVIDIA's task score over samples: 0..100, rounded to 2 decimals."""
    if task not in TASK_SPECS:
        raise ValueError(f"unknown RULER task {task!r}")
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    fn = metric(task)
    total = sum(fn(postprocess(p), list(r)) for p, r in zip(predictions, references, strict=True))
    return round(total / len(predictions) * 100, 2)
