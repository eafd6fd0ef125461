"""Two evaluations of the same RULER samples, sample by sample: `longctx answers A.json --against B.json`.

Two models evaluated with the same seed, haystack and tokenizer get the same samples (same index, same
references), so each sample is a pair: A's score against B's. Per cell and over all compared cells: how
many samples A scored higher, how many B, how many equal, how many were answered with the very same text
(two backends of one model: do they generate alike, right or wrong), the mean difference (A - B, points)
and the two-sided sign test of the higher/lower counts (an exact binomial test with p = 1/2 over the
samples that differ). It says whether a difference between two models on these samples is more than a
coin would give; it says nothing of other samples, seeds or trainings (the study's seeds do that).
"""

from __future__ import annotations

from math import comb


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: P(a split at least this uneven) for wins + losses fair coin flips."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def pair_cell(a: dict, b: dict) -> dict | None:
    """The paired counts of one (task, length) cell of `answers_cmd.cell_answers` from each evaluation; None
    when the two cells were not drawn from the same samples (indices or references differ)."""
    sa, sb = a["per_sample"], b["per_sample"]
    if sa.keys() != sb.keys() or any(sa[i]["references"] != sb[i]["references"] for i in sa):
        return None
    diffs = [sa[i]["score"] - sb[i]["score"] for i in sorted(sa)]
    return counts(a["task"], a["length"], diffs, sum(sa[i]["answer"] == sb[i]["answer"] for i in sa))


def counts(task: str, length: int | None, diffs: list[float], same: int) -> dict:
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    return {
        "task": task,
        "length": length,
        "samples": len(diffs),
        "a_higher": wins,
        "b_higher": losses,
        "equal": len(diffs) - wins - losses,
        "same": same,  # samples answered with the very same text (generation agreement, beyond the score)
        "mean_diff": sum(diffs) / len(diffs) if diffs else 0.0,
        "p": sign_test(wins, losses),
        "diffs": diffs,
    }


def total(rows: list[dict]) -> dict:
    """Every compared sample of every cell as one sign test."""
    return counts("all compared cells", None, [d for r in rows for d in r["diffs"]], sum(r["same"] for r in rows))
