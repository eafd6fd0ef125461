"""RULER (NVIDIA/RULER) for lm-eval: the 13 tasks' generators, sizing, scoring and task YAMLs.

from eval_tasks.ruler import TASKS, generate, score
samples = generate("niah_single_1", 4096, 100, tokenizer)
score("niah_single_1", predictions, [s["outputs"] for s in samples])
"""

from .errors import DataUnavailable, LengthTooShort
from .samples import generate, sources
from .scoring import postprocess, sample_score, score
from .spec import TASK_SPECS, TASKS, max_gen_toks

__all__ = [
    "TASKS",
    "TASK_SPECS",
    "DataUnavailable",
    "LengthTooShort",
    "generate",
    "max_gen_toks",
    "postprocess",
    "sample_score",
    "score",
    "sources",
]
