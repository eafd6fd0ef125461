"""Cached greedy generation (longctx.model.generate) against transformers' generate and against
HybridLM's own full forward (fp32, CPU, tiny randomised models)."""

from __future__ import annotations

import pytest
import torch
from test_model_util import NO_ROPE, VOCAB, hf_reference, hybrid_config, max_diff, olmo3_config, random_prompts

from longctx.model import HybridLM
from longctx.model.generate import decode_step, greedy_generate, prefill

TOL = 1e-4
NEW = 12
# 2 < the GDN conv width - 1 and < the window; 70 and 130 cross GDN chunks of 64 and the window of 8
LENGTHS = (2, 37, 70, 130)
CASES = {
    "hybrid-rope": lambda: hybrid_config(),
    "hybrid-norope": lambda: hybrid_config(rope_parameters=dict(NO_ROPE)),
    "olmo3-sliding8": lambda: olmo3_config(sliding_window=8),
}


@pytest.fixture(scope="module", params=list(CASES))
def models(request, tmp_path_factory):
    ref = hf_reference(CASES[request.param]())
    path = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(path)
    return ref, HybridLM.from_pretrained(path)


def hf_generate(ref, prompt, n, eos):
    """transformers' greedy output for one unpadded prompt, the EOS (which it keeps) cut off."""
    out = ref.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, eos_token_id=eos, pad_token_id=0)[
        0, len(prompt) :
    ].tolist()
    return out[: out.index(eos)] if eos in out else out


def test_matches_transformers_generate(models):
    ref, ours = models
    ps = random_prompts(LENGTHS)
    eos = ref.config.eos_token_id
    got = greedy_generate(ours, ps, NEW, eos_token_ids={eos})
    assert got == [hf_generate(ref, p, NEW, eos) for p in ps]


def test_decode_logits_match_full_forward(models):
    """Teacher-forced: after a packed prefill, each decode step's logits equal the full forward's
    logits at that position of prompt + fed tokens."""
    _, ours = models
    for i, got, expected, _ in decode_against_full_forward(ours, random_prompts(LENGTHS), steps=6, seed=5):
        assert expected.abs().max() > 1.0
        assert max_diff(got, expected) <= TOL, (i, max_diff(got, expected))


def decode_against_full_forward(model, ps, steps: int, seed: int):
    """(prompt index, logits of prefill + `steps` teacher-forced decode steps, the full forward's
    logits at the same positions, the decode cache) for each prompt."""
    fed = torch.randint(2, VOCAB, (len(ps), steps), generator=torch.Generator().manual_seed(seed))
    cache, logits = prefill(model, ps, capacity=max(map(len, ps)) + steps)
    per_step = [logits]
    positions = torch.tensor([len(p) for p in ps])
    for s in range(steps):
        per_step.append(decode_step(model, cache, fed[:, s], positions + s))
    with torch.no_grad():
        for i, p in enumerate(ps):
            expected = model(torch.tensor([p + fed[i].tolist()]))[0][len(p) - 1 : len(p) + steps]
            yield i, torch.stack([step[i] for step in per_step]).float(), expected.float(), cache


def test_eos_stops_one_sequence_while_others_continue(models):
    ref, ours = models
    ps = random_prompts(LENGTHS)
    free = greedy_generate(ours, ps, NEW)
    # a token some outputs produce after their first step and others never: it becomes the EOS
    seen = [set(o[1:]) for o in free]
    candidates = sorted(set().union(*seen) - set.intersection(*seen) - set(free[0][:1]) - set(o[0] for o in free))
    assert candidates, free
    eos = candidates[0]
    got = greedy_generate(ours, ps, NEW, eos_token_ids={eos, VOCAB + 10})
    assert got == [hf_generate(ref, p, NEW, eos) for p in ps]
    assert any(len(o) < NEW for o in got) and any(len(o) == NEW for o in got)
    assert got == [o[: o.index(eos)] if eos in o else o for o in free]


def test_packed_prefill_equals_one_by_one(models):
    _, ours = models
    ps = random_prompts(LENGTHS)
    budgets = [NEW, 3, 0, NEW]
    packed = greedy_generate(ours, ps, budgets)  # all four prompts in one row
    single = greedy_generate(ours, ps, budgets, max_prefill_tokens=1)  # one row per prompt
    assert packed == single
    assert [len(o) for o in packed] == budgets
    cache_a, logits_a = prefill(ours, ps, capacity=200)
    cache_b, logits_b = prefill(ours, ps, capacity=200, max_prefill_tokens=1)
    assert max_diff(logits_a, logits_b) <= TOL
    for a, b in zip(cache_a.layers, cache_b.layers, strict=True):
        for x, y in zip(vars(a).values(), vars(b).values(), strict=True):
            xs, ys = (x, y) if isinstance(x, list) else ([x], [y])
            assert all(max_diff(u, w) <= TOL for u, w in zip(xs, ys, strict=True))


def test_stop_callback_keeps_the_stopping_token():
    torch.manual_seed(0)
    model = HybridLM(hybrid_config()).eval()
    ps = random_prompts((9, 20))
    free = greedy_generate(model, ps, NEW)
    stop_at = free[0][4]
    got = greedy_generate(model, ps, NEW, stop_sequences=lambda i, ids: i == 0 and ids[-1] == stop_at)
    assert got[0] == free[0][: free[0].index(stop_at) + 1]
    assert got[1] == free[1]


def test_rejects_length_dependent_rope_and_bad_budgets():
    model = HybridLM(
        hybrid_config(
            rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}, max_position_embeddings=64
        )
    ).eval()
    with pytest.raises(ValueError, match="dynamic"):
        greedy_generate(model, [[5, 6]], 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(model, [[5, 6]], [2, 3])


def test_decode_under_autocast_with_fp32_weights(models):
    """The training loop's probe generates from fp32 master weights under bf16 autocast: the
    caches take the autocast dtype and every write into them casts (a bf16 conv tail written into
    an fp32 cache was an error on the GPU). Teacher-forced logits stay those of the full forward
    under the same autocast, within bf16 error."""
    _, ours = models
    ps = random_prompts(LENGTHS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for i, got, expected, cache in decode_against_full_forward(ours, ps, steps=4, seed=6):
            assert {c.k.dtype for c in cache.layers if hasattr(c, "k")} <= {torch.bfloat16}
            assert max_diff(got, expected) <= 0.05 * expected.abs().max(), (i, max_diff(got, expected))
        assert len(greedy_generate(ours, ps, 3)) == len(ps)


def test_keep_graph_prefills_into_the_kept_cache(models):  # noqa: F811
    """greedy_generate(keep_graph=True): the next call of as many prompts and the same rounded capacity prefills
    into the kept cache (emptied in place, as a CUDA graph of its decode step needs) and generates what a fresh
    call does; another batch size makes a new set; release_kept() frees it. (On a GPU the graph is replayed
    too: tests/test_model_gpu.py.)"""
    from longctx.model import generate

    _, ours = models
    batches = [random_prompts(n, seed=s) for n, s in (([40, 57, 33], 21), ([45, 50, 38], 22), ([40, 57], 23))]
    fresh = [greedy_generate(ours, p, NEW, cuda_graphs=True) for p in batches]
    generate.release_kept()
    got, kept = [], []
    for p in batches:
        got.append(greedy_generate(ours, p, NEW, cuda_graphs=True, keep_graph=True))
        kept.append(generate._KEPT["cache"])
    assert got == fresh
    assert kept[1] is kept[0] and kept[2] is not kept[0]  # 3 prompts twice (57 + 12 and 50 + 12 round to 256)
    assert greedy_generate(ours, batches[0], NEW, keep_graph=True) == fresh[0]  # without cuda_graphs: not kept
    assert generate._KEPT["cache"] is kept[2]
    generate.release_kept()
    assert not generate._KEPT


def test_prefill_refuses_a_cache_of_other_shapes(models):  # noqa: F811
    _, ours = models
    cache, _ = prefill(ours, random_prompts([20, 30]), capacity=64)
    with pytest.raises(ValueError, match="not one of 3 sequences of 64 positions"):
        prefill(ours, random_prompts([20, 30, 10]), capacity=64, cache=cache)
    with pytest.raises(ValueError, match="of 2 sequences of 80 positions"):
        prefill(ours, random_prompts([20, 30]), capacity=80, cache=cache)
