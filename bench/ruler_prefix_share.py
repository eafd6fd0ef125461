"""How much of a RULER run's prefill a prefix cache could reuse: per task and length, the share of prompt tokens
that repeat the start of another prompt of the same cell (its prompts sorted, the sum of each one's longest common
prefix with the one before it, over all their tokens: what a prefix tree of the prompts saves).

    python3 bench/ruler_prefix_share.py --tokenizer DIR [--lengths 8k] [--samples 20] [--tasks a,b] [--json F]

CPU, offline (the essay tasks on the bundled haystack; the QA tasks need their data). It says what vLLM's
prefix caching (on by default for transformers, opt-in for hybrid models in vLLM 0.26) or a shared-prefix
prefill could save on RULER's own prompts; it runs no model.
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

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True, help="a tokenizer folder (a model's)")
    p.add_argument("--lengths", default="8k")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--json", help="write {task: {length: share}} here")
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    lengths = parse_lengths(args.lengths)
    out: dict = {}
    print("| task | " + " | ".join(format_length(n) for n in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        row = []
        for n in lengths:
            try:
                samples = generate(task, n, args.samples, tok, haystack="bundled")
            except DataUnavailable:
                row.append("n/a")
                continue
            share = shared_fraction([tok(s["input"], add_special_tokens=False).input_ids for s in samples])
            out.setdefault(task, {})[str(n)] = share
            row.append(f"{100 * share:.1f}%")
        print(f"| {task} | " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
