"""How much of a RULER run's prefill a prefix cache could reuse: per task and length, the share of prompt tokens
that repeat the start of another prompt of the same cell (its prompts sorted, the sum of each one's longest common
prefix with the one before it, over all their tokens: what a prefix tree of the prompts saves).

    python3 bench/ruler_prefix_share.py --tokenizer DIR [--lengths 8k] [--samples 20] [--tasks a,b] [--json F]

CPU, offline (the essay tasks on the bundled haystack; the QA tasks need their data). It says what vLLM's
prefix caching (on by default for transformers, opt-in for hybrid models in vLLM 0.26) or a shared-prefix
prefill could save on RULER's own prompts, and what longctx's prefill (longctx.model.prefix: a few levels of the
tree, at its default limits) saves with all of a cell's samples in one batch; it runs no model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def shared_fraction(prompts: list[list[int]]) -> float:
    """The share of all tokens that a prefix tree of `prompts` would not compute again."""
    ids = sorted(prompts)
    total = sum(map(len, ids))
    shared = 0
    for a, b in zip(ids, ids[1:], strict=False):  # neighbours in sorted order
        n = 0
        for x, y in zip(a, b, strict=False):  # up to the shorter
            if x != y:
                break
            n += 1
        shared += n
    return shared / total if total else 0.0


def main(argv=None) -> int:
    from eval_tasks.ruler import TASKS, DataUnavailable, generate
    from longctx.lengths import format_length, parse_lengths
    from longctx.model.prefix import MIN_SAVING, plan_shared_prefill

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True, help="a tokenizer folder (a model's)")
    p.add_argument("--lengths", default="8k")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--min-saving", type=int, default=MIN_SAVING, help="the plan's (default: longctx's, %(default)s)")
    p.add_argument("--json", help='write {"tree": {task: {length: share}}, "plan": {...}, "levels": {...}} here')
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    lengths = parse_lengths(args.lengths)
    out: dict = {}
    print("tree: what a whole prefix tree saves; plan: what `longctx eval` saves with all the samples in one batch")
    print("(and the plan's levels: each a prefill of its own)")
    print("| task | " + " | ".join(f"{format_length(n)} tree / plan (levels)" for n in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        row = []
        for n in lengths:
            try:
                samples = generate(task, n, args.samples, tok, haystack="bundled")
            except DataUnavailable:
                row.append("n/a")
                continue
            ids = [tok(s["input"], add_special_tokens=False).input_ids for s in samples]
            share, plan = shared_fraction(ids), plan_shared_prefill(ids, min_saving=args.min_saving)
            out.setdefault("tree", {}).setdefault(task, {})[str(n)] = share
            out.setdefault("plan", {}).setdefault(task, {})[str(n)] = plan.shared
            out.setdefault("levels", {}).setdefault(task, {})[str(n)] = len(plan.levels)
            row.append(f"{100 * share:.1f}% / {100 * plan.shared:.1f}% ({len(plan.levels)})")
        print(f"| {task} | " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
