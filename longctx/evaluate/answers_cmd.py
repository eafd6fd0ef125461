"""`longctx answers RESULTS.json`: what a model answered in a RULER evaluation, beside the references.

    longctx answers runs/drope-64k/ruler.json [--tasks niah_single_1] [--lengths 16k,64k]
                    [--tokenizer DIR | --tokenizer embedded] [--show 3] [--json OUT.json]
                    [--against runs/yarn-64k/ruler.json]

`longctx eval` keeps every answer in its journal (`<results>.partial.jsonl`, kept after the run) under
lm-eval's request hash, not beside its sample. This rebuilds the same requests (the results file's
samples, the journal's seed, haystack and chat-template setting, the model's tokenizer), matches each
answer to its sample by that hash and rescores it with NVIDIA's metric. Per (task, length) it prints the
score (and whether it equals the results file's), how many answers were right, partly right or missed,
how many misses were cut short (a proper prefix of a reference), the most common answers, and up to
--show misses with their references. The tokenizer must be the one the evaluation sized its prompts
with: the model directory (the default, when it still exists), or `embedded` for longctx's own (every
study-20m model). A cell whose answers the journal does not hold (its samples drawn otherwise, e.g. by an
earlier RULER generator) is left out and named on stderr. `--against B.json` (another evaluation of the same
samples: same seed, haystack and tokenizer) adds a sample-by-sample comparison per cell and over them all:
how many samples each scored higher, the mean difference and a sign test (longctx.evaluate.answers_paired).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from longctx import results as R
from longctx.errors import UsageError
from longctx.evaluate.resume import read_records
from longctx.evaluate.runner import journal_path
from longctx.lengths import format_length, parse_lengths


def read_journal(path: Path) -> tuple[dict, dict[str, str]]:
    """(fingerprint, {request hash: answer}) of an answer journal."""
    if not path.exists():
        raise UsageError(f"{str(path)!r}: no answer journal beside the results (was it deleted?)")
    lines, _ = read_records(path)  # as `longctx eval` reads it (a torn last line left out), read only
    if not lines:
        raise UsageError(f"{str(path)!r} is not a longctx answer journal (empty)")
    answers = {r["key"]: r["response"] for r in lines[1:] if r.get("kind") == "response"}
    return lines[0]["fingerprint"], answers


def tokenizer_dir(choice: str | None, model: str, scratch: str) -> str:
    if choice == "embedded":
        from longctx.data import default_tokenizer

        default_tokenizer().save_pretrained(scratch)
        return scratch
    path = Path(choice or model)
    if not (path / "tokenizer_config.json").exists():
        where = "--tokenizer" if choice else f"the model directory {model!r} (from the results file)"
        raise UsageError(
            f"{where}: no tokenizer there; pass --tokenizer DIR, or --tokenizer embedded for longctx's own"
        )
    return str(path)


def samples_of(task: str, length: int, n: int, tok: str, fp: dict) -> list[tuple[str, dict]]:
    """(request hash, sample) of the n requests lm-eval builds for one cell, as `longctx eval` built them."""
    from lm_eval.api.model import hash_args
    from lm_eval.tasks import TaskManager, get_task_dict

    from eval_tasks import TASKS_DIR
    from longctx.evaluate.runner import CONTEXT_MARGIN

    # max_length as `longctx eval` sets it (the model's own config may stop short of the length evaluated)
    meta = {"pretrained": tok, "tokenizer": tok, "max_seq_lengths": [length], "max_length": length + CONTEXT_MARGIN,
            "num_samples": n,
            "chat_template": bool(fp.get("chat_template")), "seed": int(fp.get("seed", 42)),
            "haystack": fp.get("haystack", "auto")}  # fmt: skip
    if fp.get("haystack_dir"):
        meta["haystack_dir"] = fp["haystack_dir"]
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=meta)
    obj = get_task_dict([task], manager)[task]
    obj.build_all_requests(limit=n, rank=0, world_size=1, apply_chat_template=bool(fp.get("chat_template")))
    return [(hash_args("generate_until", inst.args), inst.doc) for inst in obj.instances]


UNMATCHED = (
    "answers not in the journal: made with other samples, tokenizer or data options (pass the evaluation's "
    "--tokenizer), or by an earlier RULER generator (eval_tasks.ruler.samples.GENERATOR_VERSION)"
)


def cell_answers(task: str, length: int, n: int, tok: str, fp: dict, answers: dict[str, str]) -> dict | None:
    """The cell's answers beside their references and scores; None when some sample's answer is not in the
    journal (UNMATCHED)."""
    from eval_tasks.ruler.scoring import postprocess, sample_score

    rows = []
    for key, doc in samples_of(task, length, n, tok, fp):
        if key not in answers:
            return None
        got = answers[key]
        rows.append({"index": doc["index"], "answer": got, "references": list(doc["outputs"]),
                     "score": sample_score(task, got, list(doc["outputs"]))})  # fmt: skip
    per_sample = {r["index"]: {"score": r["score"], "references": r["references"], "answer": r["answer"]} for r in rows}
    scores = [r["score"] for r in rows]
    misses = [{**r, "cut_short": cut_short(r["answer"], r["references"])} for r in rows if r["score"] < 100]
    common = Counter(postprocess(r["answer"]) for r in rows).most_common(3)
    return {
        "task": task, "length": length, "samples": len(rows), "score": sum(scores) / len(rows),
        "right": sum(s == 100 for s in scores), "partly": sum(0 < s < 100 for s in scores),
        "missed": sum(s == 0 for s in scores), "distinct": len({postprocess(r["answer"]) for r in rows}),
        "cut_short": sum(m["cut_short"] for m in misses), "common": [[a, c] for a, c in common], "misses": misses,
        "per_sample": per_sample,
    }  # fmt: skip


def cut_short(answer: str, references: list[str]) -> bool:
    """The answer (without its final period) is a proper prefix of a reference: ` 833059.` for 8330592, the
    needle found but not copied out whole (DroPE's symptom at long context)."""
    a = answer.strip().removesuffix(".").strip()
    return bool(a) and any(r != a and r.startswith(a) for r in references)


def _short(s: str, n: int = 28) -> str:
    s = s.replace("\n", " ").replace("|", "/")
    return s if len(s) <= n else s[: n - 1] + "…"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("results", help="a `longctx eval` results JSON (its journal beside it)")
    ap.add_argument("--tasks", help="comma-separated tasks (default: every task that ran)")
    ap.add_argument("--lengths", help="comma-separated lengths, e.g. 16k,64k (default: every length)")
    ap.add_argument("--tokenizer", help="tokenizer directory, or 'embedded' (default: the model directory)")
    ap.add_argument("--show", type=int, default=3, help="misses to print per cell, with references (default 3)")
    ap.add_argument("--json", help="write every cell's answers and references here")
    ap.add_argument(
        "--against",
        metavar="B.json",
        help="another evaluation of the same samples (same seed, haystack, tokenizer): compare them sample by "
        "sample per cell (higher / lower / equal counts, mean difference, sign test)",
    )


def _cells(res: dict, journal: tuple[dict, dict], tasks, lengths, tok: str) -> tuple[list[dict], list[str]]:
    """(matched cells, names of the cells whose answers the journal does not hold) of one evaluation."""
    fp, answers = journal
    cells, unmatched = [], []
    for length in lengths:
        for task in tasks:
            cell = R.cell(res, task, length)
            if cell is None or cell.get("score") is None:
                continue  # not run, or unavailable here
            got = cell_answers(task, length, int(cell["samples"]), tok, fp, answers)
            if got is None:
                unmatched.append(f"{task} @ {format_length(length)}")
                continue
            got["results_score"] = cell["score"]
            cells.append(got)
    return cells, unmatched


def run(args) -> int:
    try:
        res = R.load(args.results)
        journal = read_journal(journal_path(args.results))
        lengths = parse_lengths(args.lengths) if args.lengths else res["lengths"]
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else res["tasks"]
        tasks = [f"ruler_{t}" if t not in res["tasks"] and f"ruler_{t}" in res["tasks"] else t for t in tasks]
        for t in tasks:  # the 'ruler_' prefix may be left out, as in `longctx eval --tasks`
            if t not in res["tasks"]:
                raise UsageError(f"--tasks: {t!r} is not in {args.results} (tasks: {', '.join(res['tasks'])})")
        if args.show < 0:
            raise UsageError(f"--show {args.show}: need 0 or more")
        other = R.load(args.against) if args.against else None
        other_journal = read_journal(journal_path(args.against)) if other is not None else None
        with tempfile.TemporaryDirectory() as scratch:
            tok = tokenizer_dir(args.tokenizer, res["model"], scratch)
            cells, unmatched = _cells(res, journal, tasks, lengths, tok)
            if other is not None:
                tok = tok if args.tokenizer else tokenizer_dir(None, other["model"], scratch)
                theirs = _cells(other, other_journal, tasks, lengths, tok)[0]
            else:
                theirs = []
    except R.ResultsError as e:
        raise UsageError(str(e)) from None
    if unmatched and not cells:
        raise UsageError(f"{', '.join(unmatched)}: {UNMATCHED}")
    head = ["task", "length", "score (results file)", "right / partly / missed", "cut short", "distinct",
            "most common answers"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for c in cells:
        same = "" if abs(c["score"] - c["results_score"]) < 0.01 else f" (**{c['results_score']:.1f}**)"
        common = ", ".join(f"`{_short(a)}` x{n}" for a, n in c["common"])
        print(f"| {c['task']} | {format_length(c['length'])} | {c['score']:.1f}{same} | "
              f"{c['right']} / {c['partly']} / {c['missed']} | {c['cut_short']} | {c['distinct']} | "
              f"{common} |")  # fmt: skip
    for c in cells:
        for m in c["misses"][: args.show]:
            print(f"{c['task']} @ {format_length(c['length'])} #{m['index']}: answered {_short(m['answer'], 60)!r}, "
                  f"wanted {', '.join(m['references'])}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(cells, indent=1))
    if unmatched:
        print(f"left out, {UNMATCHED}: {', '.join(unmatched)}", file=sys.stderr)
    if other is not None:
        _print_paired(cells, theirs, args.results, args.against, (res, other))
    return 0


def _print_paired(ours: list[dict], theirs: list[dict], a: str, b: str, results: tuple[dict, dict]) -> None:
    """The sign-test table, with each cell's wall time in both evaluations where both recorded one."""
    from longctx.evaluate import answers_paired as P

    by_cell = {(c["task"], c["length"]): c for c in theirs}
    rows, apart = [], []
    for c in ours:
        other = by_cell.get((c["task"], c["length"]))
        paired = P.pair_cell(c, other) if other is not None else None
        if paired is None:
            apart.append(f"{c['task']} @ {format_length(c['length'])}")
        else:
            rows.append(paired)
    print(f"\nSample by sample, A = {a} against B = {b} (the same samples):\n")
    head = ["task", "length", "samples", "A higher / B higher / equal", "same answer", "mean A - B", "sign test p",
            "seconds A / B"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        r["seconds"] = [(R.cell(res, r["task"], r["length"]) or {}).get("seconds") for res in results]
    if rows:  # a total time only where every cell has both
        timed = all(None not in r["seconds"] for r in rows)
        spent = [sum(r["seconds"][k] for r in rows) for k in (0, 1)] if timed else [None, None]
        rows.append({**P.total(rows), "seconds": spent})
    for r in rows:
        where = format_length(r["length"]) if r["length"] is not None else ""
        a_s, b_s = r["seconds"]
        times = f"{a_s:.1f} / {b_s:.1f}" if a_s is not None and b_s is not None else "-"
        counted = f"{r['samples']} | {r['a_higher']} / {r['b_higher']} / {r['equal']} | {r['same']}"
        print(f"| {r['task']} | {where} | {counted} | {r['mean_diff']:+.1f} | {r['p']:.3g} | {times} |")
    if apart:
        print(f"not compared (not in both, or other samples): {', '.join(apart)}", file=sys.stderr)
