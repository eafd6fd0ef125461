"""What `longctx eval` spends per (task, length) cell outside the model: RULER sample generation, lm-eval's
request building and scoring, its result stamps. The model is an LM that answers at once, so every second
measured is overhead. Two passes in one process over the same cells, each generating its samples anew:
lm-eval's environment report collected per cell as lm-eval ships it (torch's collect_env: pip list,
nvidia-smi, ... in subprocesses), then once per process as `longctx eval` does.

    python3 bench/eval_cell_overhead.py --model runs/quickstart/base [--lengths 4k,8k] [--samples 20] [--json F]

--model: an HF model directory (config and tokenizer: the prompts are built with it); no weights are loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

TASKS = "niah_single_1,niah_single_2,niah_multikey_1,niah_multivalue,ruler_vt,ruler_cwe,ruler_fwe"


def instant_lm():
    from lm_eval.api.model import LM

    class Instant(LM):
        def generate_until(self, requests, disable_tqdm=False):
            return [" 42." for _ in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    return Instant()


def one_pass(model: str, lengths: list[int], tasks: list[str], samples: int, out: Path) -> float:
    """Seconds for every cell, its RULER samples generated anew (a sample cache of its own)."""
    from longctx.evaluate.runner import EvalSpec, evaluate_ruler

    os.environ["LONGCTX_RULER_CACHE"] = str(out.parent / "ruler-cache")
    spec = EvalSpec(model=model, lengths=lengths, tasks=tasks, samples=samples, out=out, backend="hf")
    t0 = time.perf_counter()
    evaluate_ruler(spec, lm=instant_lm(), log=lambda s: None)
    return time.perf_counter() - t0


def main() -> None:
    from longctx.lengths import parse_lengths
    from longctx.results import parse_tasks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--lengths", default="4k,8k")
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    lengths, tasks = parse_lengths(a.lengths), parse_tasks(a.tasks)
    cells = len(lengths) * len(tasks)

    import lm_eval.evaluator
    from lm_eval.loggers import utils

    from longctx.evaluate import runner

    with tempfile.TemporaryDirectory() as tmp:
        one_pass(a.model, lengths[:1], tasks[:1], 2, Path(tmp) / "warm" / "r.json")  # imports, tokenizer, caches
        once = runner.env_info_once
        runner.env_info_once = lambda: None  # lm-eval as shipped: the report per cell
        lm_eval.evaluator.add_env_info = utils.add_env_info
        shipped = one_pass(a.model, lengths, tasks, a.samples, Path(tmp) / "shipped" / "r.json")
        runner.env_info_once = once
        ours = one_pass(a.model, lengths, tasks, a.samples, Path(tmp) / "ours" / "r.json")
    row = {
        "cells": cells,
        "samples": a.samples,
        "lengths": lengths,
        "tasks": tasks,
        "env_report_per_cell_s": round(shipped / cells, 3),
        "env_report_once_s": round(ours / cells, 3),
    }
    print(f"{cells} cells x {a.samples} samples, seconds per cell outside the model: "
          f"environment report per cell {shipped / cells:.3f}, once per process {ours / cells:.3f}")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
