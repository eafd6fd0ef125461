"""Time RULER sample generation: ours (eval_tasks.ruler) against lm-eval's built-in `ruler`.

    python bench/ruler_generation.py [--samples 100] [--builtin-samples 5] [--lengths 4k,...,128k]

CPU only, offline. The tokenizer is a 32k byte-level BPE trained here with `tokenizers` on local
text (the Python standard library's sources and the bundled haystack), unless --tokenizer names
a tokenizer folder.

Ours runs every task at every length with --samples samples, measured in full (disk cache off).
The built-in generator can run offline only where it needs no download (essays, SQuAD/HotpotQA
and nltk's punkt come from the network): niah_single_1 (its "repeat" haystack), niah_multikey_2,
niah_multikey_3, ruler_vt, ruler_cwe and ruler_fwe. It spends a one-off search per length and
then a roughly constant time per sample, so it runs --builtin-samples samples, its search and
per-sample times are measured separately (at the start of its sample loop), and its time for
--samples samples is extrapolated as search + samples x per-sample.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import logging
import os
import platform
import sys
import sysconfig
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

BUILTIN = ("niah_single_1", "niah_multikey_2", "niah_multikey_3", "ruler_vt", "ruler_cwe", "ruler_fwe")


def train_tokenizer(out: Path) -> Path:
    """A 32k byte-level BPE on local text (a stand-in for a real model tokenizer)."""
    if (out / "tokenizer.json").exists():
        return out
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from eval_tasks.ruler.haystack import BUNDLED

    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:400] + [str(BUNDLED)] * 5
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=32000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train(files, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>").save_pretrained(
        out
    )
    return out


def time_ours(tok, tasks, lengths, n) -> dict:
    from eval_tasks.ruler import DataUnavailable, generate

    out = {}
    for length in lengths:
        for task in tasks:
            t0 = time.perf_counter()
            try:
                generate(task, length, n, tok, cache_dir=False)
            except DataUnavailable as err:
                out[(task, length)] = None
                print(f"ours    {task:16s} {length:>7d}: unavailable ({str(err).splitlines()[0][:60]})", flush=True)
                continue
            out[(task, length)] = time.perf_counter() - t0
            print(f"ours    {task:16s} {length:>7d}: {out[(task, length)]:8.2f} s", flush=True)
    return out


class _LoopClock:
    """Stands in for `tqdm` in lm-eval's ruler modules to note when the sample loop starts."""

    def __init__(self):
        self.start = None

    def __call__(self, iterable=None, *args, **kwargs):
        self.start = time.perf_counter()
        return iterable


def time_builtin(tok, tasks, lengths, m, n) -> dict:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from lm_eval.tasks.ruler import cwe_utils, fwe_utils, niah_utils, prepare_niah, vt_utils
    clock = _LoopClock()
    for mod in (prepare_niah, vt_utils, cwe_utils, fwe_utils):
        mod.tqdm = clock
    niah = {  # lm-eval's niah_utils arguments
        "niah_single_1": dict(type_haystack="repeat", type_needle_k="words", type_needle_v="numbers"),
        "niah_multikey_2": dict(type_haystack="needle", type_needle_k="words", type_needle_v="numbers"),
        "niah_multikey_3": dict(type_haystack="needle", type_needle_k="uuids", type_needle_v="uuids"),
    }
    out = {}
    for length in lengths:
        for task in tasks:
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                if task in niah:
                    a = niah[task]
                    prepare_niah.generate_samples(
                        prepare_niah.get_haystack(a["type_haystack"]), max_seq_length=length,
                        template=niah_utils.TEMPLATE, num_samples=m, TOKENIZER=tok, **a,
                    )  # fmt: skip
                elif task == "ruler_vt":
                    icl = vt_utils.sys_vartrack_w_noise_random(
                        tokenizer=tok, num_samples=1, max_seq_length=500, incremental=5
                    )[0]
                    vt_utils.sys_vartrack_w_noise_random(
                        tokenizer=tok, num_samples=m, max_seq_length=length, icl_example=icl
                    )
                elif task == "ruler_cwe":
                    cwe_utils.sys_word_pair_random(num_samples=m, max_seq_length=length, tokenizer=tok)
                elif task == "ruler_fwe":
                    fwe_utils.sys_kwext(tokenizer=tok, max_seq_length=length, num_samples=m)
            t1 = time.perf_counter()
            search, per_sample = clock.start - t0, (t1 - clock.start) / m
            out[(task, length)] = {
                "search": search,
                "per_sample": per_sample,
                "measured": t1 - t0,
                "total": search + n * per_sample,
            }
            print(
                f"builtin {task:16s} {length:>7d}: search {search:7.2f} s, {per_sample:6.3f} s/sample -> "
                f"{search + n * per_sample:8.1f} s for {n}",
                flush=True,
            )
    return out


def table(ours, builtin, tasks, lengths, n) -> str:
    def fmt(x):
        return "—" if x is None else f"{x:.1f}"

    lines = [
        "| task | "
        + " | ".join(f"{L // 1024}k ours / built-in" for L in lengths)
        + " | total ours / built-in (speed-up) |",
        "|---|" + "---|" * (len(lengths) + 1),
    ]
    grand_o = grand_b = 0.0
    for task in tasks:
        cells, to, tb = [], 0.0, 0.0
        for L in lengths:
            o = ours.get((task, L))
            b = builtin.get((task, L), {}).get("total") if (task, L) in builtin else None
            cells.append(f"{fmt(o)} / {fmt(b)}")
            to += o or 0.0
            tb += b or 0.0
        if any((task, L) in builtin for L in lengths):
            grand_o += to
            grand_b += tb
            tail = f"{to:.1f} / {tb:.1f} ({tb / to:.0f}x)"
        else:
            tail = f"{to:.1f} / —"
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {tail} |")
    lines.append(
        f"| **the {sum(1 for t in tasks if any((t, L) in builtin for L in lengths))} tasks both run** | "
        + " | ".join("" for _ in lengths)
        + f" | **{grand_o:.1f} / {grand_b:.1f} ({grand_b / max(grand_o, 1e-9):.0f}x)** |"
    )
    total_ours = sum(v for v in ours.values() if v)
    lines.append("| all tasks that ran, ours | " + " | ".join("" for _ in lengths) + f" | {total_ours:.1f} s |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=100)
    p.add_argument(
        "--builtin-samples",
        type=int,
        default=5,
        help="samples the built-in generator really makes (its time for --samples is extrapolated)",
    )
    p.add_argument("--lengths", default="4k,8k,16k,32k,64k,128k")
    p.add_argument("--tasks", default=None, help="comma-separated (default: all 13)")
    p.add_argument("--tokenizer", default=None, help="a tokenizer folder (default: train a 32k byte-level BPE)")
    p.add_argument("--skip-builtin", action="store_true")
    p.add_argument("--json", default=None, help="write the timings here")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)

    from transformers import AutoTokenizer

    from eval_tasks.ruler import TASKS
    from longctx.errors import UsageError
    from longctx.lengths import parse_lengths

    try:
        lengths = parse_lengths(args.lengths, "--lengths")
    except UsageError as e:
        sys.exit(f"ruler_generation.py: error: {e}")
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    path = (
        Path(args.tokenizer)
        if args.tokenizer
        else train_tokenizer(Path(os.environ.get("TMPDIR", "/tmp")) / "longctx-bench-bpe32k")
    )
    tok = AutoTokenizer.from_pretrained(path)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"python {platform.python_version()}"
    )
    print(f"tokenizer: {path} (vocab {len(tok)}); {args.samples} samples; lengths {lengths}", flush=True)

    ours = time_ours(tok, tasks, lengths, args.samples)
    builtin = (
        {}
        if args.skip_builtin
        else time_builtin(tok, [t for t in tasks if t in BUILTIN], lengths, args.builtin_samples, args.samples)
    )
    print()
    print(table(ours, builtin, tasks, lengths, args.samples))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"samples": args.samples, "builtin_samples": args.builtin_samples, "lengths": lengths,
             "ours": {f"{t}@{L}": v for (t, L), v in ours.items()},
             "builtin": {f"{t}@{L}": v for (t, L), v in builtin.items()}}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
