"""What `--model longctx`'s generate_until spends encoding prompts, around the model: lm-eval's HFLM way (every
prompt encoded one by one to sort the requests, then each batch encoded again) against ours (all prompts encoded up
front, 64 a tokenizer call, the batches built from those encodings). The model is replaced by one that returns its
input, so every second measured is encoding, padding and lm-eval's bookkeeping. Prompts: the bundled haystack
text (eval_tasks/ruler/data/botchan.txt) cut to each length, a distinct suffix each.

    python3 bench/eval_encode_overhead.py --model runs/quickstart/base [--cells 4096:50,65536:8] [--json F]

--model: an HF model directory (its tokenizer is used; the weights are loaded but never run). Each way runs twice,
alternating; the table gives the faster of the two.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    import eval_tasks
    from longctx.evaluate.lm_model import LongctxLM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--cells", default="4096:50,65536:8", help="LENGTH:PROMPTS,...")
    ap.add_argument("--json")
    args = ap.parse_args()
    longest = max(int(cell.split(":")[0]) for cell in args.cells.split(","))
    lm = LongctxLM(pretrained=args.model, device="cpu", batch_size=64, max_length=longest + 64)
    lm._model_generate = lambda context, max_length, stop, **kw: context  # no model: what surrounds it
    text = (Path(eval_tasks.TASKS_DIR) / "ruler" / "data" / "botchan.txt").read_text()
    base = lm.tokenizer.encode(text)
    rows = []
    for cell in args.cells.split(","):
        length, count = map(int, cell.split(":"))
        while len(base) < length + 7 * count:
            base = base + base
        prompts = [lm.tokenizer.decode(base[7 * i : 7 * i + length - 64]) + f" Question {i}:" for i in range(count)]
        reqs = [
            Instance("generate_until", {}, (p, {"until": ["\n"], "max_gen_toks": 4}), i) for i, p in enumerate(prompts)
        ]

        def hflm(reqs=reqs):  # outside our generate_until, tok_encode and tok_batch_encode take HFLM's own path
            HFLM.generate_until(lm, reqs, disable_tqdm=True)

        def ours(reqs=reqs):
            lm.generate_until(reqs, disable_tqdm=True)

        times = {"hflm": [], "ours": []}
        for _ in range(2):
            times["hflm"].append(_timed(hflm))
            times["ours"].append(_timed(ours))
        row = {"length": length, "prompts": count, **{k: min(v) for k, v in times.items()}}
        rows.append(row)
        print(f"{length:>6} tokens x {count:>3}: HFLM's way {row['hflm']:.3f} s, ours {row['ours']:.3f} s "
              f"({row['hflm'] / row['ours']:.1f}x)")  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": args.model, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
