"""longctx.model.prefix: the shared-prefill plan, checked by playing it out on token lists: every
segment must start from exactly the tokens its row holds, and every row must end holding its prompt."""

from __future__ import annotations

import random

import pytest

from longctx.model.prefix import plan_shared_prefill


def play(prompts, plan):
    """Run the plan on lists instead of caches; returns the tokens prefilled."""
    rows = [[] for _ in prompts]
    computed = 0
    for forks, segments in plan.levels:
        for src, dst in forks:
            rows[dst] = list(rows[src])
        seen = set()
        for s in segments:
            assert s.row not in seen, "a row prefilled twice in one level"
            seen.add(s.row)
            assert rows[s.row] == prompts[s.row][: s.start], (s, len(rows[s.row]))
            assert s.end > s.start
            rows[s.row] += prompts[s.row][s.start : s.end]
            computed += s.end - s.start
    assert rows == prompts
    last = plan.levels[-1][1]
    assert sorted(s.row for s in last) == list(range(len(prompts)))  # every prompt's last token: its own
    assert all(s.end == len(prompts[s.row]) for s in last)
    return computed


def needles(n, length, seed=0, vocab=50):
    """RULER's shape: one haystack, a needle at a random depth of each prompt, its own question."""
    rng = random.Random(seed)
    hay = [rng.randrange(vocab) for _ in range(length)]
    out = []
    for i in range(n):
        d = rng.randrange(length)
        out.append(hay[:d] + [vocab + i, vocab + 1] + hay[d:] + [vocab + 2, i])
    return out


@pytest.mark.parametrize("max_levels", [0, 1, 2, 4, 8, 64])
def test_needles_play_out(max_levels):
    prompts = needles(24, 3000)
    plan = plan_shared_prefill(prompts, min_saving=64, max_levels=max_levels)
    assert play(prompts, plan) == plan.computed
    assert plan.total == sum(map(len, prompts))
    assert len(plan.levels) <= max_levels + 1
    if max_levels == 0:
        assert plan.computed == plan.total and len(plan.levels) == 1
    if max_levels >= 8:  # a needle at a uniform depth: about half of every prompt is haystack before it
        assert plan.shared > 0.4


def test_more_levels_share_more():
    prompts = needles(32, 4000, seed=1)
    shares = [plan_shared_prefill(prompts, min_saving=64, max_levels=m).shared for m in (1, 2, 4, 8, 32)]
    assert shares == sorted(shares) and shares[-1] > shares[0] + 0.1, shares


def test_edge_prompts():
    """Identical prompts, a prompt that is another's prefix, one-token prompts, nothing in common."""
    base = list(range(100, 400))
    prompts = [base, list(base), base[:150], base[:1], [7], base[:150] + [1, 2], [9] + base]
    plan = plan_shared_prefill(prompts, min_saving=1, max_levels=16)
    play(prompts, plan)
    # base is prefilled once for the two identical prompts and base[:150] once for three
    assert plan.computed == 300 + 1 + 1 + 1 + 1 + 2 + 301
    alone = plan_shared_prefill([[5, 6, 7], [8, 9]], min_saving=1)
    assert play([[5, 6, 7], [8, 9]], alone) == 5 and len(alone.levels) == 1


def test_small_savings_get_no_level():
    prompts = [[1] * 10 + [2, i] for i in range(3)] + [[3] * 500 + [i] for i in range(4)]
    plan = plan_shared_prefill(prompts, min_saving=100, max_levels=8)
    play(prompts, plan)
    assert plan.computed == 3 * 12 + 500 + 4  # the 10 shared tokens would save 20: not worth a level


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        plan_shared_prefill([])
    with pytest.raises(ValueError):
        plan_shared_prefill([[1], []])
    with pytest.raises(ValueError):
        plan_shared_prefill([[1]], max_levels=-1)
